"""Pump tests of a cupmon device, cup by cup (docs/technician.md).

Every selected cup is tested at once (each cup has its own pump and valve),
sealed on a rigid test volume, through device commands over the link:

1. **Pump-down**: VENT to ambient, then START with a band above the highest
   target; the time from the first REGULATING sample to the first reading at
   or above 20 and 25 kPa (device clock, s).
2. **Regulation**: VENT, START in the therapy band (20-25 kPa); once the cup
   is in band, ``regulate_s`` of readings give the ripple (peak-to-peak and
   standard deviation, kPa).
3. **Leak-down**: STOP (pump off, valve closed), wait ``hold_settle_s``, hold
   ``hold_s``. Suction of a cup with a non-choked leak decays exponentially
   (Q = C (p_amb - p), domain.md), so ``ln(suction)`` is fitted against time
   over the hold (up to where a fifth is lost): the rate ``lam`` (1/s)
   gives the decay rate at the start, ``lam s0`` (kPa/min), and the leak
   ``Q = V lam s0 / p_amb`` (mL/min of air at ambient) for the given cup
   volume ``V``. The loss over the hold is the fitted one, or the measured
   one when a fifth or more was lost.
4. **Maximum suction**: SET_LIMIT raised to ``max_limit_kpa``, START with the
   band just below it so the pump never stops; the plateau (settled reading)
   or the highest reading within ``max_time_s``. Then VENT, and the device's
   own limit and the default band are restored.

Pass criteria default to the published figures (J Korean Acupunct Moxib Soc
2010;27(1), domain.md): target reached within 5 s; no more than 10 % loss
over 600 s, scaled linearly to the hold. Ours (no published figure): the
regulated readings stay within the band widened by the alarm margins, and the
pump reaches at least the top of the band.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from firmware_bridge import conditions as C
from firmware_bridge.codec import Command
from firmware_bridge.messages import DeviceInfo
from firmware_bridge.protocol import MsgType, Status, cup_mask
from firmware_bridge.source import Source

from .calibration import (
    CalibrationAborted,
    CalibrationError,
    Poly,
    Prompter,
    QuietPrompter,
    Sampler,
    SettleCriteria,
    assess_window,
    device_command,
)

#: The leak-down fit stops where suction has fallen to this fraction of its start.
FIT_UNTIL = 0.8
#: Standard atmosphere, kPa: converts a pressure-volume flow to air volume at ambient.
AMBIENT_KPA = 101.325
PUMPDOWN_SOURCE = "J Korean Acupunct Moxib Soc 2010;27(1): target reached in < 5 s"
LEAK_SOURCE = "J Korean Acupunct Moxib Soc 2010;27(1): no more than 10 % loss over 600 s"


class PumpTestError(CalibrationError):
    """A pump test could not be run; one line for the technician."""


@dataclass(frozen=True)
class PumpTestCriteria:
    """What is measured and what passes. Pressures: suction kPa; times: s of
    device clock; volume mL."""

    targets_kpa: tuple[float, ...] = (20.0, 25.0)
    pumpdown_max_s: float = 5.0
    pumpdown_timeout_s: float = 20.0
    band_low_kpa: float = C.BAND_LOW_KPA
    band_high_kpa: float = C.BAND_HIGH_KPA
    band_margin_kpa: float = C.UNDER_MARGIN_KPA
    regulate_s: float = 10.0
    hold_s: float = 60.0
    hold_settle_s: float = 1.0
    max_loss_pct: float = 10.0
    max_loss_per_s: float = 600.0
    max_suction: bool = True
    max_limit_kpa: float = 60.0
    max_time_s: float = 30.0
    max_suction_min_kpa: float = C.BAND_HIGH_KPA
    cup_volume_ml: float = 100.0
    ambient_kpa: float = AMBIENT_KPA
    vent_kpa: float = 1.0
    vent_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if not self.targets_kpa or min(self.targets_kpa) <= 0:
            raise ValueError("pump-down targets must be positive kPa")
        if not (self.hold_s > 0 and self.regulate_s > 0 and self.cup_volume_ml > 0):
            raise ValueError("hold, regulation time and cup volume must be positive")
        if not 0 <= self.band_low_kpa < self.band_high_kpa:
            raise ValueError("the band must have low < high")

    @property
    def allowed_loss_pct(self) -> float:
        """Allowed loss over the hold: the published figure scaled linearly."""
        return self.max_loss_pct * self.hold_s / self.max_loss_per_s


@dataclass(frozen=True)
class Check:
    """One pass criterion applied to one measured value."""

    name: str
    value: float | None
    limit: float
    unit: str
    passed: bool
    criterion: str


@dataclass
class CupPumpResult:
    """Measured figures of one cup (None = not reached / not measured)."""

    cup: int
    pumpdown_s: dict[float, float | None] = field(default_factory=dict)
    ripple_kpa_pp: float | None = None
    ripple_kpa_sd: float | None = None
    regulated_mean_kpa: float | None = None
    regulated_min_kpa: float | None = None
    regulated_max_kpa: float | None = None
    hold_start_kpa: float | None = None
    hold_end_kpa: float | None = None
    leak_rate_per_s: float | None = None
    leakdown_kpa_per_min: float | None = None
    leak_ml_per_min: float | None = None
    leak_loss_pct: float | None = None
    max_suction_kpa: float | None = None
    max_suction_plateau: bool | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"cup": self.cup}
        for target, s in sorted(self.pumpdown_s.items()):
            d[f"pumpdown_s_to_{target:g}"] = s
        d.update(max_suction_kpa=self.max_suction_kpa,
                 max_suction_plateau=self.max_suction_plateau,
                 ripple_kpa_pp=self.ripple_kpa_pp, ripple_kpa_sd=self.ripple_kpa_sd,
                 regulated_mean_kpa=self.regulated_mean_kpa,
                 regulated_min_kpa=self.regulated_min_kpa,
                 regulated_max_kpa=self.regulated_max_kpa,
                 hold_start_kpa=self.hold_start_kpa, hold_end_kpa=self.hold_end_kpa,
                 leakdown_kpa_per_min=self.leakdown_kpa_per_min,
                 leak_ml_per_min=self.leak_ml_per_min, leak_loss_pct=self.leak_loss_pct,
                 leak_rate_per_s=self.leak_rate_per_s, pass_=self.passed,
                 checks=[asdict(c) for c in self.checks])
        d["pass"] = d.pop("pass_")
        return d


@dataclass
class PumpTestRun:
    """A pump test of one device."""

    info: DeviceInfo
    source: str
    cups: list[int]
    criteria: PumpTestCriteria
    started_wall: float
    finished_wall: float = 0.0
    results: list[CupPumpResult] = field(default_factory=list)
    traces: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    technician: str = ""
    aborted: bool = False
    abort_reason: str = ""
    report_id: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.aborted and bool(self.results) and all(r.passed for r in self.results)

    @property
    def result(self) -> str:
        return "PASS" if self.passed else "FAIL"


# --------------------------------------------------------------------------
# Pure analysis (unit-tested without a device)
# --------------------------------------------------------------------------

def first_crossing(t: np.ndarray, x: np.ndarray, level: float, t_start: float) -> float | None:
    """Seconds from ``t_start`` to the first sample at or after it reading >= ``level``."""
    ok = (t >= t_start) & (x >= level)
    if not ok.any():
        return None
    return float(t[int(np.argmax(ok))] - t_start)


@dataclass(frozen=True)
class LeakFit:
    """Exponential decay fitted to a hold: ``lam`` (1/s), start suction
    ``s0`` (kPa), loss over the hold (%), samples used."""

    lam: float
    s0: float
    s_end: float
    loss_pct: float
    n_fit: int
    whole_hold: bool

    def decay_kpa_per_min(self) -> float:
        return self.lam * self.s0 * 60.0

    def leak_ml_per_min(self, volume_ml: float, ambient_kpa: float = AMBIENT_KPA) -> float:
        """Q = V dp/dt at the start of the hold, as air at ambient, mL/min."""
        return volume_ml * self.lam * self.s0 / ambient_kpa * 60.0


def fit_leakdown(t: np.ndarray, x: np.ndarray) -> LeakFit:
    """Fit ``x = s0 exp(-lam (t - t0))`` by least squares on ln(x) over the hold
    up to where suction fell to FIT_UNTIL of its start (all of it for a tight cup)."""
    t = np.asarray(t, dtype=float)
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    t, x = t[ok], x[ok]
    if t.size < 10:
        raise PumpTestError("too few readings in the hold to measure a leak")
    head = max(int(0.05 * t.size), 5)
    start = float(np.median(x[:head]))
    if start <= 0.5:
        raise PumpTestError("the cup held no suction at the start of the leak-down test")
    # The rate at the start of the hold: fit only until a fifth is lost
    # (the whole hold for a tight cup), where a cup's volume still is what it was.
    below = np.nonzero(x < FIT_UNTIL * start)[0]
    end = max(int(below[0]) if below.size else t.size, 10)
    tt, xx = t[:end] - t[0], np.maximum(x[:end], 1e-3)
    slope, intercept = np.polyfit(tt, np.log(xx), 1)
    lam = max(-float(slope), 0.0)
    s0 = float(math.exp(intercept))
    tail = x[-head:]
    s_end = float(np.mean(tail))
    whole = not below.size
    hold = float(t[-1] - t[0])
    # A tight cup: the fitted loss (all samples, far less noisy than two end
    # means); a leaking one: what was actually lost.
    loss = 100.0 * (1.0 - math.exp(-lam * hold)) if whole else 100.0 * (s0 - s_end) / s0
    return LeakFit(lam, s0, s_end, loss, int(end), whole)


def judge(res: CupPumpResult, crit: PumpTestCriteria) -> None:
    """Fill ``res.checks`` from its figures and ``crit``."""
    checks = []
    for target in crit.targets_kpa:
        s = res.pumpdown_s.get(target)
        checks.append(Check(f"pumpdown_to_{target:g}", s, crit.pumpdown_max_s, "s",
                            s is not None and s <= crit.pumpdown_max_s,
                            f"0 -> {target:g} kPa within {crit.pumpdown_max_s:g} s "
                            f"({PUMPDOWN_SOURCE})"))
    lo = crit.band_low_kpa - crit.band_margin_kpa
    hi = crit.band_high_kpa + crit.band_margin_kpa
    inside = (res.regulated_min_kpa is not None and res.regulated_max_kpa is not None
              and res.regulated_min_kpa >= lo and res.regulated_max_kpa <= hi)
    checks.append(Check("regulation_in_band", res.ripple_kpa_pp, hi - lo, "kPa pp", inside,
                        f"regulated readings within {lo:g}-{hi:g} kPa (band "
                        f"{crit.band_low_kpa:g}-{crit.band_high_kpa:g} kPa widened by the "
                        f"{crit.band_margin_kpa:g} kPa alarm margin; cupmon's criterion)"))
    allowed = crit.allowed_loss_pct
    checks.append(Check("leakdown_loss", res.leak_loss_pct, allowed, "%",
                        res.leak_loss_pct is not None and res.leak_loss_pct <= allowed,
                        f"loss <= {allowed:.3g} % over the {crit.hold_s:g} s hold ({LEAK_SOURCE}, "
                        "scaled linearly to the hold)"))
    if crit.max_suction:
        m = res.max_suction_kpa
        checks.append(Check("max_suction", m, crit.max_suction_min_kpa, "kPa",
                            m is not None and m >= crit.max_suction_min_kpa,
                            f"maximum suction >= {crit.max_suction_min_kpa:g} kPa (the top of the "
                            "band; cupmon's criterion)"))
    res.checks = checks


# --------------------------------------------------------------------------
# Running it on a device
# --------------------------------------------------------------------------

class _Runner:
    """One pump test's device session (state shared by the phases)."""

    def __init__(self, link: Source, sampler: Sampler, cups: list[int], crit: PumpTestCriteria,
                 ui: Prompter, stop: threading.Event, polys: dict[int, Poly]) -> None:
        self.link, self.sampler, self.cups, self.crit = link, sampler, cups, crit
        self.ui, self.stop, self.polys = ui, stop, polys
        self.mask = cup_mask(cups)
        self.cols = [c - 1 for c in cups]
        self.traces: dict[str, dict[str, list[float]]] = {}

    # -- plumbing --------------------------------------------------------
    def cmd(self, cmd: Command, what: str) -> None:
        if self.stop.is_set():
            raise CalibrationAborted("aborted")
        device_command(self.link, cmd, what)

    def data(self, t0: float, t1: float = math.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Readings of the tested cups from t0 (host calibration in force applied)."""
        t, x, st = self.sampler.window(t0, t1)
        if x.ndim != 2 or x.shape[0] == 0:
            return t, np.zeros((0, len(self.cols))), np.zeros((0, len(self.cols)), dtype=np.uint8)
        x = x[:, self.cols].astype(float)
        for k, cup in enumerate(self.cups):
            p = self.polys.get(cup)
            if p is not None:
                x[:, k] = p(x[:, k])
        return t, x, st[:, self.cols]

    def now(self) -> float:
        if not self.sampler.wait_newer(None, 5.0):
            raise PumpTestError("no data from the device")
        t = self.sampler.latest_t
        assert t is not None
        return t

    def wait(self, done: Callable[[float], bool], timeout_s: float, t0: float) -> bool:
        """Wait until ``done(latest device t)`` or ``timeout_s`` of device time."""
        last = None
        while True:
            if self.stop.is_set():
                raise CalibrationAborted("aborted")
            if not self.sampler.wait_newer(last, 5.0):
                raise PumpTestError("no data from the device for 5 s: check the connection")
            last = self.sampler.latest_t
            assert last is not None
            if done(last):
                return True
            if last - t0 > timeout_s:
                return False

    def first_status(self, t_from: float, bit: int, present: bool,
                     timeout_s: float = 10.0) -> float:
        """Device time (s) by which every tested cup has shown ``bit`` set
        (``present``) or clear, in samples from ``t_from`` on."""
        found: dict[int, float] = {}

        def seen(t1: float) -> bool:
            t, _, st = self.data(t_from, t1)
            for k in range(len(self.cups)):
                if k in found or not t.size:
                    continue
                hit = ((st[:, k] & int(bit)) != 0) == present
                if hit.any():
                    found[k] = float(t[int(np.argmax(hit))])
            return len(found) == len(self.cups)

        if not self.wait(seen, timeout_s, t_from):
            raise PumpTestError("the device did not act on the command (status bits unchanged)")
        return max(found.values())

    def vent(self) -> None:
        """VENT the cups and wait until they read near zero and steady."""
        self.cmd(Command(MsgType.VENT, mask=self.mask), "venting")
        t0 = self.now()
        crit = SettleCriteria(band_kpa=0.1, time_s=1.0, timeout_s=self.crit.vent_timeout_s)

        def vented(t1: float) -> bool:
            t, x, st = self.data(max(t0, t1 - crit.time_s), t1)
            if t1 - crit.time_s < t0:
                return False
            a = assess_window(t, x, st, crit)
            return a.ok and all(abs(r.mean_kpa) <= self.crit.vent_kpa for r in a.readings)

        if not self.wait(vented, crit.timeout_s, t0):
            raise PumpTestError(f"the cups did not vent to below {self.crit.vent_kpa:g} kPa within "
                                f"{crit.timeout_s:g} s: is a valve stuck?")

    # -- phases ----------------------------------------------------------
    def pumpdown(self, results: dict[int, CupPumpResult]) -> None:
        crit = self.crit
        top = max(crit.targets_kpa)
        limit = self.link.info.hard_limit_kpa if self.link.info else C.HARD_LIMIT_KPA
        high = min(top + 3.0, limit - 0.5)
        if high <= top:
            raise PumpTestError(f"the device's hard limit {limit:g} kPa leaves no room above "
                                f"the {top:g} kPa pump-down target")
        self.ui.say(f"Pump-down: 0 -> {', '.join(f'{v:g}' for v in crit.targets_kpa)} kPa.")
        self.cmd(Command(MsgType.SET_BAND, mask=self.mask, low_kpa=top, high_kpa=high),
                 "setting the pump-down band")
        t0 = self.now()
        self.cmd(Command(MsgType.START, mask=self.mask), "starting the pumps")

        def all_reached(t1: float) -> bool:
            t, x, _ = self.data(t0, t1)
            return bool(x.size) and bool((x.max(axis=0) >= top).all())

        self.wait(all_reached, crit.pumpdown_timeout_s, t0)
        t, x, st = self.data(t0)
        self._trace("pumpdown", t, x, t0)
        for k, cup in enumerate(self.cups):
            reg = (st[:, k] & int(Status.REGULATING)) != 0
            if not reg.any():
                raise PumpTestError(f"cup {cup} did not start regulating after START")
            t_start = float(t[int(np.argmax(reg))])
            for target in crit.targets_kpa:
                results[cup].pumpdown_s[target] = first_crossing(t, x[:, k], target, t_start)
        self.vent()

    def regulate_and_hold(self, results: dict[int, CupPumpResult]) -> None:
        crit = self.crit
        self.ui.say(f"Regulation in {crit.band_low_kpa:g}-{crit.band_high_kpa:g} kPa for "
                    f"{crit.regulate_s:g} s, then leak-down hold of {crit.hold_s:g} s.")
        self.cmd(Command(MsgType.SET_BAND, mask=self.mask, low_kpa=crit.band_low_kpa,
                         high_kpa=crit.band_high_kpa), "setting the therapy band")
        t0 = self.now()
        self.cmd(Command(MsgType.START, mask=self.mask), "starting the pumps")

        def in_band(t1: float) -> bool:
            _, x, _ = self.data(t0, t1)
            return bool(x.size) and bool((x.max(axis=0) >= crit.band_low_kpa).all())

        if not self.wait(in_band, crit.pumpdown_timeout_s, t0):
            self.ui.say("Not every cup reached the band; regulation measured as it is.")
        t_in = self.now() + 1.0   # let the first overshoot pass
        self.wait(lambda t1: t1 >= t_in + crit.regulate_s, crit.regulate_s + 5.0, t_in)
        t, x, _ = self.data(t_in, t_in + crit.regulate_s)
        self._trace("regulation", t, x, t0)
        for k, cup in enumerate(self.cups):
            col = x[:, k]
            r = results[cup]
            r.ripple_kpa_pp = float(np.ptp(col)) if col.size else None
            r.ripple_kpa_sd = float(col.std(ddof=1)) if col.size > 1 else None
            r.regulated_mean_kpa = float(col.mean()) if col.size else None
            r.regulated_min_kpa = float(col.min()) if col.size else None
            r.regulated_max_kpa = float(col.max()) if col.size else None
        # Leak-down: pump off, valve closed, the cup holds what it has. The
        # hold is timed from the first sample the device shows stopped (the
        # newest sample received may lag the moment STOP acted).
        t_cmd = self.now()
        self.cmd(Command(MsgType.STOP, mask=self.mask), "stopping the pumps")
        t_stop = self.first_status(t_cmd, Status.REGULATING, present=False)
        h0 = t_stop + crit.hold_settle_s
        h1 = h0 + crit.hold_s
        self.wait(lambda t1: t1 >= h1, crit.hold_settle_s + crit.hold_s + 5.0, t_stop)
        t, x, _ = self.data(h0, h1)
        self._trace("leakdown", t, x, t_stop)
        for k, cup in enumerate(self.cups):
            r = results[cup]
            try:
                fit = fit_leakdown(t, x[:, k])
            except PumpTestError as exc:
                self.ui.say(f"Cup {cup}: {exc}.")
                continue
            r.hold_start_kpa, r.hold_end_kpa = fit.s0, fit.s_end
            r.leak_rate_per_s = fit.lam
            r.leakdown_kpa_per_min = fit.decay_kpa_per_min()
            r.leak_ml_per_min = fit.leak_ml_per_min(crit.cup_volume_ml, crit.ambient_kpa)
            r.leak_loss_pct = fit.loss_pct
        self.vent()

    def max_suction(self, results: dict[int, CupPumpResult]) -> None:
        crit = self.crit
        info = self.link.info
        old_limit = info.hard_limit_kpa if info is not None else C.HARD_LIMIT_KPA
        self.ui.say(f"Maximum suction (interlock limit raised to {crit.max_limit_kpa:g} kPa: "
                    "test volume only, never on a person).")
        self.cmd(Command(MsgType.SET_LIMIT, limit_kpa=crit.max_limit_kpa), "raising the limit")
        try:
            self.cmd(Command(MsgType.SET_BAND, mask=self.mask, low_kpa=crit.max_limit_kpa - 2.0,
                             high_kpa=crit.max_limit_kpa - 1.0), "setting the open-loop band")
            t0 = self.now()
            self.cmd(Command(MsgType.START, mask=self.mask), "starting the pumps")
            plateau = SettleCriteria(band_kpa=0.2, time_s=2.0, timeout_s=crit.max_time_s)
            settled: dict[int, float] = {}

            def done(t1: float) -> bool:
                if t1 - plateau.time_s < t0 + 1.0:
                    return False
                t, x, st = self.data(t1 - plateau.time_s, t1)
                for k, cup in enumerate(self.cups):
                    if cup in settled or x.shape[0] == 0:
                        continue
                    a = assess_window(t, x[:, [k]], st[:, [k]], plateau)
                    top = crit.max_limit_kpa - 2.0
                    if (a.ok and a.readings[0].mean_kpa > crit.vent_kpa) or x[:, k].max() >= top:
                        settled[cup] = a.readings[0].mean_kpa if a.ok else float(x[:, k].max())
                return len(settled) == len(self.cups)

            self.wait(done, crit.max_time_s, t0)
            t, x, _ = self.data(t0)
            self._trace("max_suction", t, x, t0)
            for k, cup in enumerate(self.cups):
                r = results[cup]
                r.max_suction_plateau = cup in settled
                r.max_suction_kpa = settled.get(cup, float(np.nanmax(x[:, k])) if x.size else None)
        finally:
            # Whatever happened: vent, and give the device its own limit and the default band.
            for cmd, what in ((Command(MsgType.VENT, mask=self.mask), "venting"),
                              (Command(MsgType.SET_LIMIT, limit_kpa=old_limit), "restoring the limit"),
                              (Command(MsgType.SET_BAND, mask=self.mask, low_kpa=C.BAND_LOW_KPA,
                                       high_kpa=C.BAND_HIGH_KPA), "restoring the band")):
                try:
                    device_command(self.link, cmd, what)
                except CalibrationError as exc:
                    self.ui.say(f"Warning: {exc}")

    def _trace(self, name: str, t: np.ndarray, x: np.ndarray, t0: float) -> None:
        """Keep a decimated trace (<= 400 points) for the report's plots."""
        if t.size == 0:
            return
        step = max(1, t.size // 400)
        self.traces[name] = {"t_s": [round(float(v - t0), 4) for v in t[::step]]}
        for k, cup in enumerate(self.cups):
            self.traces[name][f"cup{cup}_kpa"] = [round(float(v), 3) for v in x[::step, k]]


def run_pumptest(link: Source, sampler: Sampler, cups: Sequence[int] | None = None,
                 criteria: PumpTestCriteria | None = None, ui: Prompter | None = None,
                 stop: threading.Event | None = None, polys: dict[int, Poly] | None = None,
                 technician: str = "", start_after_s: float | None = None) -> PumpTestRun:
    """Run the pump test (module doc) on ``cups`` (all if None) of the device
    behind the connected ``link``, ``sampler`` listening to it. ``polys``: host
    calibration in force per cup, applied to the readings. ``start_after_s``:
    wait until that device time first (a simulator scenario's script).
    Raises PumpTestError for a device that cannot be tested; an abort returns
    the run with ``aborted`` set."""
    crit = criteria or PumpTestCriteria()
    ui = ui or QuietPrompter()
    stop = stop or threading.Event()
    info = link.info
    if info is None:
        raise PumpTestError("the device sent no INFO: the pump test needs a cupmon device "
                            "speaking the binary protocol")
    cups = list(cups) if cups else list(range(1, info.cups + 1))
    if any(not 1 <= c <= info.cups for c in cups):
        raise PumpTestError(f"this device has cups 1..{info.cups}")
    need = crit.hold_s + crit.regulate_s + crit.max_time_s + 60.0
    if sampler.keep_s < need:
        sampler.keep_s = need
    run = PumpTestRun(info, getattr(link, "url", ""), cups, crit, time.time(), technician=technician)
    runner = _Runner(link, sampler, cups, crit, ui, stop, polys or {})
    run.traces = runner.traces
    results = {c: CupPumpResult(c) for c in cups}
    try:
        if start_after_s is not None:
            t_first = runner.now()
            runner.wait(lambda t1: t1 >= start_after_s, max(start_after_s - t_first, 0) + 5.0,
                        t_first)
        ui.say(f"Pump test of {info.serial} cups {', '.join(map(str, cups))}: cups sealed on "
               "a rigid test volume.")
        runner.vent()
        runner.pumpdown(results)
        runner.regulate_and_hold(results)
        if crit.max_suction:
            runner.max_suction(results)
    except (CalibrationAborted, KeyboardInterrupt):
        run.aborted, run.abort_reason = True, "aborted"
        try:
            device_command(link, Command(MsgType.VENT, mask=cup_mask(cups)), "venting")
        except CalibrationError:
            pass
    for r in results.values():
        judge(r, crit)
    run.results = [results[c] for c in cups]
    run.finished_wall = time.time()
    return run


def pumptest_json(run: PumpTestRun, report: str | None = None) -> dict[str, Any]:
    """The ``cupcal pumptest --json`` document."""
    crit = run.criteria
    return {
        "device": run.info.serial, "result": run.result, "report": report,
        "report_id": run.report_id, "aborted": run.aborted,
        "criteria": dict(asdict(crit), allowed_loss_pct=crit.allowed_loss_pct,
                         pumpdown_source=PUMPDOWN_SOURCE, leak_source=LEAK_SOURCE),
        "cups": [r.to_dict() for r in run.results],
    }
