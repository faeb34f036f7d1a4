"""Sensor calibration of a cupmon device after EURAMET cg-17's basic procedure.

docs/technician.md is the user's description; this module is the one
implementation the ``cupcal`` CLI and the GUI Technician tab both drive.

What it does, per cup (all selected cups sit on one bench manifold):

* **Plan** (:func:`make_plan`): the points (default 0, 5 ... 30 kPa suction)
  in a rising then a falling series (EURAMET cg-17: at least 6 points, both
  directions, to reveal hysteresis), optionally repeats at 0 % and mid-span
  (repeatability).
* **Settling** (:func:`assess_window`, :func:`wait_settled`): a point is taken
  only when the last ``time_s`` seconds of the reading, cut into ``parts``
  equal parts, have part means within ``band_kpa`` of each other (stable
  within a band for a time, on averages so sensor noise does not hide a
  settled reading). The point's value is the mean over that window.
* **Reference** per point from the simulator's true pressure
  (:class:`SimReference`), a typed gauge reading (:class:`ManualReference`)
  or a reference gauge on a second serial port (:class:`GaugeReference`).
* **Results** (:func:`analyse_cup`): as-found errors, a least-squares fit
  ``reference = c0 + c1 raw (+ c2 raw^2)`` (second order only when an F-test
  at 95 % *and* a smaller largest residual both say it helps), as-left
  errors (computed from the same points and, where the bench can be stepped
  automatically, re-measured with the new coefficients applied), hysteresis,
  non-linearity, repeatability, an expanded uncertainty (k = 2) and
  PASS/FAIL under the guarded-acceptance decision rule: a point passes when
  ``|error| + U <= tolerance``.

The device's own calibration state is respected: a device with INFO flag
CAL_ON_DEVICE reports corrected values (its coefficients are read with
READ_CAL and inverted to get raw readings, and the new ones are written with
WRITE_CAL); otherwise the host applies the latest stored calibration
(``monitor.cal_apply``), so as-found readings are that calibration applied to
the device's raw values. Never both.
"""

from __future__ import annotations

import calendar
import collections
import datetime as _dt
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from firmware_bridge.codec import Command, decode_cal_data
from firmware_bridge.errors import LinkError
from firmware_bridge.listener import Listener
from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState, SampleBlock
from firmware_bridge.protocol import InfoFlags, MsgType, Status, cup_mask
from firmware_bridge.source import Source

# --------------------------------------------------------------------------
# Defaults (each one is a CLI flag; docs/technician.md gives the reasons)
# --------------------------------------------------------------------------

#: EURAMET cg-17 asks for at least 6 points over the range; 0..30 kPa covers
#: the 20-25 kPa therapy band and the 30 kPa interlock.
DEFAULT_POINTS_KPA: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0)
DEFAULT_TOLERANCE_KPA = 0.5
#: Wire resolution of a suction value (docs/protocol.md 3.1), kPa.
WIRE_RESOLUTION_KPA = 0.01
#: Calibration interval (months) unless the technician says otherwise.
DUE_MONTHS = 12
#: Second order is used only if it lowers the largest residual by this much (kPa).
QUAD_MIN_GAIN_KPA = 0.05
#: Gauge reference: the point is taken when the reference is within this of
#: nominal (kPa, or 10 % of nominal if larger).
APPROACH_KPA = 1.0
#: No sample for this long (wall s) while waiting = the device stopped talking.
NO_DATA_S = 5.0

RISING, FALLING, REPEAT, VERIFY = "rising", "falling", "repeat", "verify"


class CalibrationError(Exception):
    """A calibration step failed; ``str()`` is one line for the technician."""


class CalibrationAborted(CalibrationError):
    """The technician (or the GUI's Abort button) stopped the procedure."""


# --------------------------------------------------------------------------
# Small value types
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Poly:
    """``corrected = c0 + c1 raw + c2 raw^2`` (c0 kPa, c1 1, c2 1/kPa), the
    wire protocol's calibration polynomial (docs/protocol.md section 4)."""

    c0: float = 0.0
    c1: float = 1.0
    c2: float = 0.0

    @property
    def coeffs(self) -> tuple[float, float, float]:
        return (float(self.c0), float(self.c1), float(self.c2))

    @property
    def is_identity(self) -> bool:
        return self.coeffs == (0.0, 1.0, 0.0)

    def __call__(self, raw: Any) -> Any:
        x = np.asarray(raw, dtype=float)
        out = self.c0 + self.c1 * x + self.c2 * x * x
        return float(out) if out.ndim == 0 else out

    def inverse(self, y: Any) -> Any:
        """The raw reading that gives ``y`` (the root nearest the linear one)."""
        v = np.asarray(y, dtype=float) - self.c0
        if self.c2 == 0.0:
            out = v / self.c1
        else:
            # 2v / (c1 + sqrt(c1^2 + 4 c2 v)): no cancellation when c2 is small.
            disc = np.maximum(self.c1 * self.c1 + 4.0 * self.c2 * v, 0.0)
            out = 2.0 * v / (self.c1 + np.sqrt(disc))
        return float(out) if np.ndim(out) == 0 else out


IDENTITY = Poly()


@dataclass(frozen=True)
class Tolerance:
    """Maximum permissible error: ``value`` kPa, or ``value`` % of span."""

    value: float = DEFAULT_TOLERANCE_KPA
    percent_of_span: bool = False

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        """``"0.5"``/``"0.5kPa"`` (kPa) or ``"1%"`` (% of span)."""
        s = str(text).strip().lower().replace(" ", "")
        pct = s.endswith("%")
        s = s.rstrip("%").removesuffix("kpa")
        try:
            v = float(s)
        except ValueError:
            raise ValueError(f"tolerance must be kPa (0.5) or % of span (1%), not {text!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"tolerance must be positive, not {text!r}")
        return cls(v, pct)

    def kpa(self, span_kpa: float) -> float:
        return self.value * span_kpa / 100.0 if self.percent_of_span else self.value

    def describe(self, span_kpa: float) -> str:
        if self.percent_of_span:
            return f"{self.value:g} % of span ({self.kpa(span_kpa):.3g} kPa)"
        return f"{self.value:g} kPa ({100.0 * self.value / span_kpa:.3g} % of span)" \
            if span_kpa > 0 else f"{self.value:g} kPa"


@dataclass(frozen=True)
class SettleCriteria:
    """A reading is settled when, over the last ``time_s`` s of device time,
    the means of ``parts`` equal parts lie within ``band_kpa`` of each other;
    give up after ``timeout_s`` s of device time."""

    band_kpa: float = 0.1
    time_s: float = 5.0
    parts: int = 5
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not (self.band_kpa > 0 and self.time_s > 0 and self.timeout_s > 0 and self.parts >= 2):
            raise ValueError("settle band and times must be positive (and parts >= 2)")

    def describe(self) -> str:
        return (f"the means of {self.parts} equal parts of the last {self.time_s:g} s "
                f"within {self.band_kpa:g} kPa of each other")


@dataclass(frozen=True)
class Reading:
    """A settled reading of one channel: mean and standard deviation (kPa) of
    ``n`` samples from device time ``t0`` to ``t1`` (s)."""

    mean_kpa: float
    sd_kpa: float
    n: int
    t0: float
    t1: float

    @property
    def sem_kpa(self) -> float:
        """Standard error of the mean, kPa."""
        return self.sd_kpa / math.sqrt(self.n) if self.n > 0 else math.inf


@dataclass(frozen=True)
class PlanStep:
    """One point of the procedure: ``nominal_kpa`` approached in ``series``."""

    index: int
    nominal_kpa: float
    series: str


def parse_points(text: str) -> tuple[float, ...]:
    """``"0,5,10"`` -> (0.0, 5.0, 10.0) kPa; at least 2 distinct points, none negative."""
    try:
        pts = tuple(float(v) for v in str(text).replace(";", ",").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"points must be numbers in kPa separated by commas, not {text!r}") from None
    if len(set(pts)) < 2:
        raise ValueError("give at least 2 different calibration points")
    if any(not (0.0 <= p <= 100.0) for p in pts):
        raise ValueError("calibration points must be within 0..100 kPa suction")
    return pts


def make_plan(points: Sequence[float] = DEFAULT_POINTS_KPA, falling: bool = True,
              repeats: int = 0, series: str | None = None) -> list[PlanStep]:
    """Rising series over ``points`` (sorted), then falling (without repeating
    the top), then ``repeats`` cycles of (mid-span, 0 %) for repeatability
    (EURAMET cg-17: repeats at 0 % and 40-60 % of span). ``series`` names
    every step (e.g. "verify") instead."""
    pts = sorted(float(p) for p in points)
    steps = [(p, RISING) for p in pts]
    if falling:
        steps += [(p, FALLING) for p in pts[-2::-1]]
    if repeats > 0:
        lo, hi = pts[0], pts[-1]
        mid = min(pts, key=lambda p: abs(p - (lo + hi) / 2.0))
        for _ in range(int(repeats)):
            steps += [(mid, REPEAT), (lo, REPEAT)]
    return [PlanStep(i + 1, p, series or s) for i, (p, s) in enumerate(steps)]


# --------------------------------------------------------------------------
# Collecting samples and judging whether they have settled
# --------------------------------------------------------------------------

class Sampler(Listener):
    """Keeps the last ``keep_s`` seconds (device time) of samples for waits and
    windows; thread-safe (fed on its dispatch thread, read by the procedure)."""

    idle_interval = None

    def __init__(self, keep_s: float = 180.0) -> None:
        self.keep_s = float(keep_s)
        self._cond = threading.Condition()
        self._blocks: collections.deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = \
            collections.deque()
        self.info: DeviceInfo | None = None
        self.link_state: LinkState | None = None
        self.link_message = ""
        self.stopped = False

    def on_block(self, block: SampleBlock) -> None:
        with self._cond:
            self._blocks.append((block.t, block.suction, block.status))
            newest = float(block.t[-1])
            while len(self._blocks) > 1 and float(self._blocks[0][0][-1]) < newest - self.keep_s:
                self._blocks.popleft()
            self._cond.notify_all()

    def on_message(self, msg: object) -> None:
        with self._cond:
            if isinstance(msg, DeviceInfo):
                self.info = msg
            elif isinstance(msg, LinkEvent):
                if msg.state is not LinkState.ERROR:
                    self.link_state = msg.state
                self.link_message = msg.message
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    @property
    def latest_t(self) -> float | None:
        """Device time of the newest sample (s), or None before any."""
        with self._cond:
            return float(self._blocks[-1][0][-1]) if self._blocks else None

    def window(self, t0: float, t1: float = math.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples with ``t0 <= t <= t1``: (t (n,), suction (n, cups), status (n, cups))."""
        with self._cond:
            parts = []
            for t, x, st in reversed(self._blocks):
                if t[-1] < t0:
                    break
                parts.append((t, x, st))
        if not parts:
            return np.zeros(0), np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=np.uint8)
        parts.reverse()
        cups = parts[-1][1].shape[1]
        parts = [p for p in parts if p[1].shape[1] == cups]  # a cup-count change starts afresh
        t = np.concatenate([p[0] for p in parts])
        x = np.concatenate([p[1] for p in parts])
        st = np.concatenate([p[2] for p in parts])
        keep = (t >= t0) & (t <= t1)
        return t[keep], x[keep], st[keep]

    def wait_newer(self, t: float | None, timeout: float) -> bool:
        """Wait (wall ``timeout`` s) for a sample newer than device time ``t``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._blocks and (t is None or float(self._blocks[-1][0][-1]) > t):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self.stopped:
                    return False
                self._cond.wait(min(left, 0.1))


@dataclass(frozen=True)
class Assessment:
    """Result of :func:`assess_window`: settled or not, the largest spread of
    part means (kPa), why not, and one :class:`Reading` per channel."""

    ok: bool
    spread_kpa: float
    reason: str
    readings: tuple[Reading, ...] = ()


def assess_window(t: np.ndarray, x: np.ndarray, status: np.ndarray | None,
                  crit: SettleCriteria) -> Assessment:
    """Judge one window (t (n,), x (n, k)) against ``crit`` (module doc)."""
    n = int(t.shape[0])
    if n < 2 * crit.parts:
        return Assessment(False, math.inf, "too few samples")
    span = float(t[-1] - t[0])
    step = span / max(n - 1, 1)
    if span + step < 0.9 * crit.time_s:
        return Assessment(False, math.inf, "the window has a gap")
    x = np.asarray(x, dtype=float)
    bad = ~np.isfinite(x)
    if status is not None and status.size:
        bad |= (status & int(Status.SENSOR_FAULT)) != 0
    if bad.any():
        return Assessment(False, math.inf, "no reading or a sensor fault in the window")
    edges = np.linspace(t[0], t[-1] + 1e-9, crit.parts + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, crit.parts - 1)
    counts = np.bincount(idx, minlength=crit.parts)
    if (counts == 0).any():
        return Assessment(False, math.inf, "the window has a gap")
    sums = np.zeros((crit.parts, x.shape[1]))
    np.add.at(sums, idx, x)
    means = sums / counts[:, None]
    spread = float(np.max(means.max(axis=0) - means.min(axis=0)))
    sd = x.std(axis=0, ddof=1) if n > 1 else np.zeros(x.shape[1])
    readings = tuple(Reading(float(m), float(s), n, float(t[0]), float(t[-1]))
                     for m, s in zip(x.mean(axis=0), sd, strict=True))
    if spread > crit.band_kpa:
        return Assessment(False, spread, f"still moving ({spread:.3f} kPa > {crit.band_kpa:g} kPa)",
                          readings)
    return Assessment(True, spread, "", readings)


def wait_settled(sampler: Sampler, cols: Sequence[int], crit: SettleCriteria, *,
                 after_t: float | None, stop: threading.Event | None = None,
                 accept: Callable[[tuple[Reading, ...]], bool] | None = None,
                 what: str = "the reading") -> tuple[Reading, ...]:
    """Block until the columns ``cols`` (0-based) have settled together in a
    window that starts at or after device time ``after_t``; returns one
    :class:`Reading` per column. ``accept`` may refuse a settled window (e.g.
    not near the nominal yet). Raises CalibrationAborted when ``stop`` is set,
    CalibrationError after ``crit.timeout_s`` of device time or when data stops."""
    start = after_t if after_t is not None else sampler.latest_t
    last: float | None = None
    best: Assessment | None = None
    while True:
        if stop is not None and stop.is_set():
            raise CalibrationAborted("aborted")
        if not sampler.wait_newer(last, NO_DATA_S):
            if stop is not None and stop.is_set():
                raise CalibrationAborted("aborted")
            raise CalibrationError(f"no data from the device for {NO_DATA_S:g} s while waiting "
                                   f"for {what} to settle; check the connection")
        now = sampler.latest_t
        assert now is not None
        if start is None:
            start = now
        last = now
        if now - crit.time_s >= start:
            t, x, st = sampler.window(now - crit.time_s, now)
            cols_ok = x.ndim == 2 and x.shape[1] > max(cols)
            if cols_ok:
                a = assess_window(t, x[:, list(cols)], st[:, list(cols)], crit)
                if a.ok and (accept is None or accept(a.readings)):
                    return a.readings
                best = a
        if now - start > crit.timeout_s:
            why = "no full window yet" if best is None else best.reason or \
                "steady, but not where it should be"
            raise CalibrationError(f"{what} did not settle within {crit.timeout_s:g} s "
                                   f"({why}); widen --settle-band or check the bench for leaks")


# --------------------------------------------------------------------------
# The simulator as a bench: set pressure, true (reference) pressure
# --------------------------------------------------------------------------

class SimHandle:
    """The Simulation behind a ``sim://`` port: steps the calibration rig
    (``set_reference``) and records the true suction of every sample the
    device produces, so a point's reference is the true mean over the very
    window its reading was averaged on.

    It uses the virtual device's public API only (docs/virtual-device.md):
    an output hook for the samples, ``call_locked`` for the rig."""

    def __init__(self, port: Any, keep_s: float = 600.0) -> None:
        device = getattr(port, "device", None)  # sim.protocol_sim.Serial.device
        sim = getattr(device, "sim", None)
        if sim is None or not hasattr(device, "call_locked"):
            raise CalibrationError("--sim needs the built-in simulator (a sim:// port)")
        self.device, self.sim = device, sim
        self.keep_s = keep_s
        self._lock = threading.Lock()
        self._truth: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        device.add_output_hook(self._on_output)

    @classmethod
    def of(cls, link: Source) -> SimHandle:
        """The handle of a started ``SerialLink`` on a ``sim://`` URL."""
        port = getattr(link, "port", None)
        if port is None:
            raise CalibrationError("the simulator is reachable only through an open "
                                   "SerialLink on a sim:// URL")
        return cls(port)

    def _on_output(self, _data: bytes, samples: Any) -> None:
        # The device's producing thread, under its lock: every sample taken, in order.
        if samples is not None:
            self._record(samples.t_s, samples.true_suction_kpa)

    def _record(self, t: np.ndarray, true: np.ndarray) -> None:
        if t.shape[0] == 0:
            return
        with self._lock:
            self._truth.append((t, np.asarray(true, dtype=float)))
            while len(self._truth) > 1 and self._truth[0][0][-1] < t[-1] - self.keep_s:
                self._truth.popleft()

    def set_reference(self, kpa: float) -> float:
        """Drive the calibration rig's chamber to ``kpa`` suction; returns the
        device time (s) from which the new set point acts."""
        def step(d: Any) -> float:
            # Under the device lock: never in the middle of a produced chunk.
            d.sim.set_reference(float(kpa))
            return float(d.sim.t_s)

        try:
            return float(self.device.call_locked(step))
        except ValueError as exc:
            raise CalibrationError(f"simulator: {exc}") from None

    @property
    def now_s(self) -> float:
        """Device time of the simulator's next sample (s): ahead of what a
        listener has received, by however far the link lags."""
        return float(self.device.call_locked(lambda d: d.sim.t_s))

    def true_mean(self, col: int, t0: float, t1: float) -> float:
        """Mean true suction of column ``col`` over device times [t0, t1], kPa."""
        with self._lock:
            parts = [(t, v) for t, v in self._truth if t[-1] >= t0 and t[0] <= t1]
        if not parts:
            raise CalibrationError("simulator: no true pressure recorded for that window")
        t = np.concatenate([p[0] for p in parts])
        v = np.concatenate([p[1][:, col] for p in parts])
        keep = (t >= t0 - 1e-7) & (t <= t1 + 1e-7)
        return float(v[keep].mean())

    def truth(self, t0: float, t1: float = math.inf) -> tuple[np.ndarray, np.ndarray]:
        """True suction recorded for device times in (t0, t1]: (t (n,), kPa (n, cups))."""
        with self._lock:
            parts = [(t, v) for t, v in self._truth if t[-1] > t0 and t[0] <= t1]
        if not parts:
            return np.zeros(0), np.zeros((0, self.sim.cups))
        t = np.concatenate([p[0] for p in parts])
        v = np.concatenate([p[1] for p in parts])
        keep = (t > t0) & (t <= t1)
        return t[keep], v[keep]

    def script_end_s(self) -> float:
        """Device time after the scenario's last scripted action (s)."""
        times = [a.t for a in getattr(self.sim.script, "actions", []) if math.isfinite(a.t)]
        return max(times, default=0.0)


# --------------------------------------------------------------------------
# Talking to the technician
# --------------------------------------------------------------------------

class Prompter(Protocol):
    """How the procedure talks to the technician (console or GUI)."""

    def say(self, text: str) -> None:
        """Show one line of guidance."""

    def ask(self, text: str) -> str | None:
        """Ask and wait for an answer; None = no answer possible (end of input)."""


class QuietPrompter:
    """Keeps what was said; answers nothing (automatic references only)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        self.lines.append(text)

    def ask(self, text: str) -> str | None:
        self.lines.append(text)
        return None


# --------------------------------------------------------------------------
# Benches (who sets the pressure) and references (who says what it is)
# --------------------------------------------------------------------------

class Bench(Protocol):
    automatic: bool

    def go_to(self, kpa: float, ui: Prompter) -> float | None:
        """Bring the manifold to about ``kpa`` suction (or ask someone to).
        Returns the device time (s) of the step when known, else None."""

    def describe(self) -> str: ...


class SimBench:
    """The simulator's calibration rig, stepped by software."""

    automatic = True

    def __init__(self, handle: SimHandle) -> None:
        self.handle = handle

    def go_to(self, kpa: float, ui: Prompter) -> float | None:
        return self.handle.set_reference(kpa)

    def describe(self) -> str:
        return "simulated calibration rig (sim://calibration_rig), stepped by cupcal"


class OperatorBench:
    """A hand pump / pressure controller the technician operates."""

    automatic = False

    def go_to(self, kpa: float, ui: Prompter) -> float | None:
        ui.say(f"Bring the bench to about {kpa:g} kPa suction and hold it there.")
        return None

    def describe(self) -> str:
        return "bench pressure set by the technician"


@dataclass(frozen=True)
class Taken:
    """A point was taken: reference (kPa) and settled reading per column."""

    references: tuple[float, ...]
    readings: tuple[Reading, ...]


@dataclass(frozen=True)
class Correct:
    """Correct the previous point's reference value to ``value`` kPa."""

    value: float


class Redo:
    """Drop the previous point and take it again."""


class Skip:
    """Leave this point out."""


class Abort:
    """Stop the procedure; points taken so far are kept."""


Outcome = Taken | Correct | Redo | Skip | Abort


@dataclass
class PointContext:
    """What a reference needs to take one point."""

    sampler: Sampler
    cols: tuple[int, ...]
    settle: SettleCriteria
    ui: Prompter
    bench: Bench
    stop: threading.Event
    step_t: float | None
    has_previous: bool
    total: int


class Reference(Protocol):
    kind: str
    automatic: bool

    def take(self, step: PlanStep, ctx: PointContext) -> Outcome: ...

    def describe(self) -> str: ...


class SimReference:
    """The simulator's true pressure, averaged over the reading's own window."""

    kind = "sim"
    automatic = True

    def __init__(self, handle: SimHandle) -> None:
        self.handle = handle

    def take(self, step: PlanStep, ctx: PointContext) -> Outcome:
        readings = wait_settled(ctx.sampler, ctx.cols, ctx.settle, after_t=ctx.step_t,
                                stop=ctx.stop, what=f"the reading at {step.nominal_kpa:g} kPa")
        refs = tuple(self.handle.true_mean(c, r.t0, r.t1)
                     for c, r in zip(ctx.cols, readings, strict=True))
        return Taken(refs, readings)

    def describe(self) -> str:
        return ("simulator true pressure (training and testing only: not traceable to "
                "SI units)")


MANUAL_HELP = ("type the reference gauge reading in kPa, or: c VALUE = correct the previous "
               "point, r = redo the previous point, s = skip this point, a = abort (points "
               "taken so far are kept)")


class ManualReference:
    """The technician reads the reference gauge and types its value."""

    kind = "manual"
    automatic = False

    def __init__(self, instrument: str = "") -> None:
        self.instrument = instrument

    def take(self, step: PlanStep, ctx: PointContext) -> Outcome:
        ui = ctx.ui
        if ctx.bench.automatic:
            # The rig steps itself: let it settle before asking what the gauge says.
            wait_settled(ctx.sampler, ctx.cols, ctx.settle, after_t=ctx.step_t, stop=ctx.stop,
                         what=f"the reading at {step.nominal_kpa:g} kPa")
            ui.say(f"The bench is steady near {step.nominal_kpa:g} kPa.")
        confirm: float | None = None
        while True:
            answer = ui.ask(f"Point {step.index}/{ctx.total} ({step.series}, nominal "
                            f"{step.nominal_kpa:g} kPa): reference reading in kPa "
                            "[number | c VALUE | r | s | a | ?]: ")
            if answer is None:
                ui.say("No more input: aborting; the points taken so far are kept.")
                return Abort()
            text = answer.strip().lower()
            if text in ("a", "abort", "q", "quit"):
                return Abort()
            if text in ("s", "skip"):
                return Skip()
            if text in ("?", "h", "help", ""):
                ui.say(MANUAL_HELP)
                continue
            if text in ("r", "redo"):
                if not ctx.has_previous:
                    ui.say("There is no previous point to redo.")
                    continue
                return Redo()
            if text.startswith("c"):
                if not ctx.has_previous:
                    ui.say("There is no previous point to correct.")
                    continue
                value = _number(text[1:].removeprefix("orrect"))
                if value is None:
                    ui.say("Type c followed by the corrected reference value, e.g. c 5.02")
                    continue
                return Correct(value)
            value = _number(text)
            if value is None:
                ui.say(f"Not understood: {answer.strip()!r}. {MANUAL_HELP}")
                continue
            far = abs(value - step.nominal_kpa) > max(2.0, 0.2 * step.nominal_kpa)
            if far and confirm != value:
                ui.say(f"{value:g} kPa is far from the nominal {step.nominal_kpa:g} kPa: type it "
                       "again to confirm, or type the right value.")
                confirm = value
                continue
            after = ctx.sampler.latest_t
            if after is not None:
                after = max(after - ctx.settle.time_s, ctx.step_t or -math.inf)
            readings = wait_settled(ctx.sampler, ctx.cols, ctx.settle, after_t=after,
                                    stop=ctx.stop, what="the device reading")
            return Taken(tuple(value for _ in ctx.cols), readings)

    def describe(self) -> str:
        return "reference gauge read by the technician (manual entry)"


def _number(text: str) -> float | None:
    try:
        v = float(text.strip().replace(",", "."))
    except ValueError:
        return None
    return v if math.isfinite(v) else None


class GaugeReference:
    """A reference gauge on a second serial port speaking the text format
    (docs/protocol.md section 6). A point is taken when the gauge is steady
    near the nominal pressure and then the device reading has settled too,
    with the gauge still steady at the same value (the two clocks are not
    compared: only the order of events)."""

    kind = "gauge"
    automatic = True

    def __init__(self, link: Source, sampler: Sampler, channel: int = 1,
                 approach_kpa: float = APPROACH_KPA, timeout_s: float = math.inf) -> None:
        self.link, self.sampler = link, sampler
        self.channel = int(channel)
        self.approach_kpa = approach_kpa
        # A person sets the bench: wait for them (abort with Ctrl-C or the stop
        # event) unless told otherwise.
        self.timeout_s = timeout_s
        self.url = getattr(link, "url", "")

    def take(self, step: PlanStep, ctx: PointContext) -> Outcome:
        near = max(self.approach_kpa, 0.1 * step.nominal_kpa)
        col = self.channel - 1
        crit = replace(ctx.settle, timeout_s=self.timeout_s)
        # 1. The gauge says the bench is steady at the point ...
        first = wait_settled(self.sampler, [col], crit, after_t=self.sampler.latest_t,
                             stop=ctx.stop, accept=lambda r: abs(r[0].mean_kpa - step.nominal_kpa)
                             <= near, what=f"the reference gauge near {step.nominal_kpa:g} kPa")[0]
        held: list[Reading] = []

        def gauge_still(_readings: tuple[Reading, ...]) -> bool:
            t1 = self.sampler.latest_t
            if t1 is None:
                return False
            t, x, st = self.sampler.window(t1 - ctx.settle.time_s, t1)
            if x.ndim != 2 or x.shape[1] <= col:
                return False
            a = assess_window(t, x[:, [col]], st[:, [col]], ctx.settle)
            if a.ok and abs(a.readings[0].mean_kpa - first.mean_kpa) <= ctx.settle.band_kpa:
                held[:] = [a.readings[0]]
                return True
            return False

        # 2. ... then the device must settle after that moment (its data may
        # arrive later than the gauge's), with the gauge still there.
        readings = wait_settled(ctx.sampler, ctx.cols, ctx.settle, after_t=ctx.sampler.latest_t,
                                stop=ctx.stop, accept=gauge_still,
                                what=f"the device reading at {step.nominal_kpa:g} kPa with the "
                                     "gauge steady")
        return Taken(tuple(held[0].mean_kpa for _ in ctx.cols), readings)

    def describe(self) -> str:
        return f"reference gauge on {self.url} (text format, channel {self.channel})"


# --------------------------------------------------------------------------
# Points and the procedure
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class CalPoint:
    """One cup at one point. ``indicated_kpa``: what the instrument showed in
    the state being assessed (as found, or as left when verifying); ``raw_kpa``:
    the device's reading before any calibration; ``sd_kpa``/``n``: spread and
    count of the samples averaged; ``t0``/``t1``: device-time window, s."""

    cup: int
    index: int
    series: str
    nominal_kpa: float
    reference_kpa: float
    indicated_kpa: float
    raw_kpa: float
    sd_kpa: float
    n: int
    t0: float
    t1: float

    @property
    def error_kpa(self) -> float:
        return self.indicated_kpa - self.reference_kpa

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["error_kpa"] = self.error_kpa
        return d


@dataclass(frozen=True)
class CupState:
    """How a cup's readings become indications: the device applies its own
    calibration (``device_applies``: indication = device value, raw = inverse)
    or the host applies ``poly`` to the device's raw value."""

    poly: Poly = IDENTITY
    device_applies: bool = False
    basis: str = "no calibration applied (raw readings)"

    def indicate(self, value: float) -> tuple[float, float]:
        """Device value -> (indicated, raw), kPa."""
        if self.device_applies:
            return value, float(self.poly.inverse(value))
        return float(self.poly(value)), value


class Procedure:
    """Runs a plan on the cups ``cups`` (1-based) and collects :class:`CalPoint` s.

    ``states`` maps each cup to its :class:`CupState`. Answers from the
    reference (corrections, redo, skip, abort) are handled here; an abort,
    Ctrl-C or the stop event ends the run with the points taken kept."""

    def __init__(self, sampler: Sampler, cups: Sequence[int], bench: Bench,
                 reference: Reference, settle: SettleCriteria, ui: Prompter,
                 states: dict[int, CupState], stop: threading.Event | None = None) -> None:
        self.sampler, self.cups = sampler, list(cups)
        self.bench, self.reference = bench, reference
        self.settle, self.ui, self.states = settle, ui, states
        self.stop = stop or threading.Event()
        self.aborted = False
        self.abort_reason = ""

    def run(self, plan: Sequence[PlanStep]) -> list[CalPoint]:
        taken: list[list[CalPoint]] = []   # one list (all cups) per point taken
        i = 0
        cols = tuple(c - 1 for c in self.cups)
        try:
            while i < len(plan):
                step = plan[i]
                stepped = self.bench.go_to(step.nominal_kpa, self.ui)
                self.sampler.wait_newer(None, NO_DATA_S)
                # Windows start after the step: its exact device time when the
                # bench knows it (the data received may lag it), else now.
                step_t = self.sampler.latest_t
                if stepped is not None:
                    step_t = max(step_t or stepped, stepped)
                ctx = PointContext(self.sampler, cols, self.settle, self.ui, self.bench, self.stop,
                                   step_t, bool(taken), len(plan))
                out = self.reference.take(step, ctx)
                if isinstance(out, Taken):
                    pts = [self._point(cup, step, ref, r) for cup, ref, r in
                           zip(self.cups, out.references, out.readings, strict=True)]
                    taken.append(pts)
                    self.ui.say(self._describe(step, pts))
                    i += 1
                elif isinstance(out, Correct):
                    prev = taken[-1]
                    old = prev[0].reference_kpa
                    taken[-1] = [replace(p, reference_kpa=out.value) for p in prev]
                    self.ui.say(f"Point {prev[0].index}: reference corrected from {old:.3f} to "
                                f"{out.value:.3f} kPa.")
                elif isinstance(out, Redo):
                    prev = taken.pop()
                    i = next(k for k, s in enumerate(plan) if s.index == prev[0].index)
                    self.ui.say(f"Point {prev[0].index} dropped; taking it again.")
                elif isinstance(out, Skip):
                    self.ui.say(f"Point {step.index} skipped.")
                    i += 1
                else:
                    self._abort("aborted by the technician")
                    break
        except CalibrationAborted:
            self._abort("aborted")
        except KeyboardInterrupt:
            self._abort("interrupted (Ctrl-C)")
        return [p for pts in taken for p in pts]

    def _abort(self, why: str) -> None:
        self.aborted, self.abort_reason = True, why
        self.ui.say(f"Calibration {why}; the points taken so far are kept.")

    def _point(self, cup: int, step: PlanStep, ref: float, r: Reading) -> CalPoint:
        indicated, raw = self.states[cup].indicate(r.mean_kpa)
        slope = self.states[cup].poly.c1 if not self.states[cup].device_applies else 1.0
        return CalPoint(cup, step.index, step.series, step.nominal_kpa, float(ref), indicated,
                        raw, r.sd_kpa * abs(slope), r.n, r.t0, r.t1)

    def _describe(self, step: PlanStep, pts: list[CalPoint]) -> str:
        errs = ", ".join(f"cup {p.cup} {p.indicated_kpa:.2f} ({p.error_kpa:+.3f})" for p in pts)
        return (f"Point {step.index} {step.series} {step.nominal_kpa:g} kPa: reference "
                f"{pts[0].reference_kpa:.3f} kPa; {errs}")


# --------------------------------------------------------------------------
# Fit, errors, uncertainty, decision
# --------------------------------------------------------------------------

#: Two-sided 97.5 % Student t quantiles by degrees of freedom; F(1, nu; 0.95) = t^2.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
         16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
         23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
         30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(nu: int) -> float:
    """Student t 0.975 quantile (nu degrees of freedom; table, linear in 1/nu between)."""
    if nu < 1:
        return math.inf
    if nu in _T975:
        return _T975[nu]
    keys = sorted(_T975)
    if nu > keys[-1]:
        lo, hi, tlo, thi = keys[-1], math.inf, _T975[keys[-1]], 1.960
    else:
        lo = max(k for k in keys if k < nu)
        hi = min(k for k in keys if k > nu)
        tlo, thi = _T975[lo], _T975[hi]
    a = (1.0 / lo - 1.0 / nu) / (1.0 / lo - (0.0 if hi == math.inf else 1.0 / hi))
    return tlo + a * (thi - tlo)


@dataclass(frozen=True)
class Fit:
    """Least-squares fit of reference on raw reading. ``order`` 1 or 2;
    ``rss1``/``rss2`` residual sums of squares (kPa^2) and ``max1``/``max2``
    largest absolute residuals (kPa) of the first/second-order fits;
    ``f_stat``/``f_crit`` the F-test of the second-order term (95 %);
    ``reason`` says in words why the order was chosen."""

    poly: Poly
    order: int
    n: int
    rss1: float
    rss2: float | None
    max1: float
    max2: float | None
    f_stat: float | None
    f_crit: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"offset_kpa": self.poly.c0, "gain": self.poly.c1, "c2_per_kpa": self.poly.c2,
                "order": self.order, "n": self.n, "rss1_kpa2": self.rss1, "rss2_kpa2": self.rss2,
                "max_residual1_kpa": self.max1, "max_residual2_kpa": self.max2,
                "f_stat": self.f_stat, "f_crit": self.f_crit, "reason": self.reason}


def fit_points(raw: Sequence[float], ref: Sequence[float],
               min_gain_kpa: float = QUAD_MIN_GAIN_KPA) -> Fit:
    """Least squares ``ref = c0 + c1 raw (+ c2 raw^2)``.

    Second order is chosen only when (a) there are at least 5 points, (b) the
    F statistic of the added term, ``(RSS1 - RSS2) / (RSS2 / (n - 3))``,
    exceeds F(1, n-3) at 95 %, (c) the largest residual falls by at least
    ``min_gain_kpa`` and (d) the quadratic stays monotonic (slope > 0) over
    the calibrated range. Otherwise the straight line. Raises CalibrationError
    with fewer than 2 distinct raw readings or a non-positive gain.
    """
    x = np.asarray(raw, dtype=float)
    y = np.asarray(ref, dtype=float)
    n = int(x.shape[0])
    if n < 2 or np.ptp(x) <= 0:
        raise CalibrationError("a fit needs at least 2 points at different pressures")
    a1 = np.column_stack([np.ones(n), x])
    b1 = np.linalg.lstsq(a1, y, rcond=None)[0]
    r1 = y - a1 @ b1
    rss1, max1 = float(r1 @ r1), float(np.abs(r1).max())
    poly1 = Poly(float(b1[0]), float(b1[1]), 0.0)
    if poly1.c1 <= 0:
        raise CalibrationError("the readings fall as the pressure rises (gain <= 0): check "
                               "the sensor and its tubing")
    if n < 5:
        return Fit(poly1, 1, n, rss1, None, max1, None, None, None,
                   "first order: fewer than 5 points leave too few degrees of freedom "
                   "to test a second-order term")
    a2 = np.column_stack([np.ones(n), x, x * x])
    b2 = np.linalg.lstsq(a2, y, rcond=None)[0]
    r2 = y - a2 @ b2
    rss2, max2 = float(r2 @ r2), float(np.abs(r2).max())
    nu = n - 3
    f_crit = t975(nu) ** 2
    f_stat = math.inf if rss2 <= 1e-18 else (rss1 - rss2) / (rss2 / nu)
    poly2 = Poly(float(b2[0]), float(b2[1]), float(b2[2]))
    lo, hi = float(x.min()), float(x.max())
    monotonic = min(poly2.c1 + 2 * poly2.c2 * lo, poly2.c1 + 2 * poly2.c2 * hi) > 0
    gain = max1 - max2
    if f_stat > f_crit and gain >= min_gain_kpa and monotonic:
        return Fit(poly2, 2, n, rss1, rss2, max1, max2, f_stat, f_crit,
                   f"second order: F = {f_stat:.3g} > F(1,{nu}) = {f_crit:.3g} and the largest "
                   f"residual falls by {gain:.3f} kPa (>= {min_gain_kpa:g} kPa)")
    why = []
    if f_stat <= f_crit:
        why.append(f"F = {f_stat:.3g} <= F(1,{nu}) = {f_crit:.3g}")
    if gain < min_gain_kpa:
        why.append(f"largest residual falls by only {gain:.3f} kPa (< {min_gain_kpa:g} kPa)")
    if not monotonic:
        why.append("the quadratic would not be monotonic over the range")
    return Fit(poly1, 1, n, rss1, rss2, max1, max2, f_stat, f_crit,
               "first order: " + "; ".join(why))


def hysteresis_kpa(points: Sequence[CalPoint]) -> float | None:
    """Largest |error rising - error falling| at one nominal (kPa), None if no pair."""
    rise = {p.nominal_kpa: p.error_kpa for p in points if p.series == RISING}
    fall = {p.nominal_kpa: p.error_kpa for p in points if p.series == FALLING}
    both = [abs(rise[k] - fall[k]) for k in rise if k in fall]
    return max(both) if both else None


def nonlinearity_kpa(points: Sequence[CalPoint]) -> float | None:
    """Largest deviation of the indications from their own least-squares
    straight line against the reference (kPa), None with fewer than 3 points."""
    if len(points) < 3:
        return None
    ref = np.array([p.reference_kpa for p in points])
    ind = np.array([p.indicated_kpa for p in points])
    if np.ptp(ref) <= 0:
        return None
    a = np.column_stack([np.ones(ref.size), ref])
    b = np.linalg.lstsq(a, ind, rcond=None)[0]
    return float(np.abs(ind - a @ b).max())


def repeatability_kpa(points: Sequence[CalPoint]) -> float | None:
    """Largest range of the errors at one nominal approached from the same
    direction: the mid-span rising point with its repeats, the 0 % falling
    point with its repeats (kPa). None without repeats."""
    reps = [p for p in points if p.series == REPEAT]
    if not reps:
        return None
    lo = min(p.nominal_kpa for p in points)
    out = []
    for nominal in sorted({p.nominal_kpa for p in reps}):
        base = FALLING if nominal == lo else RISING
        errs = [p.error_kpa for p in points if p.nominal_kpa == nominal
                and p.series in (base, REPEAT)]
        if len(errs) >= 2:
            out.append(max(errs) - min(errs))
    return max(out) if out else None


@dataclass(frozen=True)
class Uncertainty:
    """Standard uncertainties (kPa) of an error and their expansion (k = 2).

    reference: the reference's own (its expanded uncertainty / 2); resolution:
    0.01 kPa wire step, rectangular (/sqrt 12); mean: the largest standard
    error of a point's mean; hysteresis and repeatability: rectangular over
    their full width (/sqrt 12), as in EURAMET cg-17."""

    reference: float
    resolution: float
    mean: float
    hysteresis: float
    repeatability: float

    @property
    def combined(self) -> float:
        return math.sqrt(self.reference ** 2 + self.resolution ** 2 + self.mean ** 2
                         + self.hysteresis ** 2 + self.repeatability ** 2)

    @property
    def expanded(self) -> float:
        return 2.0 * self.combined

    def to_dict(self) -> dict[str, float]:
        d = asdict(self)
        d.update(combined=self.combined, expanded_k2=self.expanded)
        return d


def uncertainty(points: Sequence[CalPoint], reference_u_kpa: float,
                hysteresis: float | None, repeatability: float | None) -> Uncertainty:
    """:class:`Uncertainty` of the errors of ``points`` (see its doc).
    ``reference_u_kpa`` is the reference's expanded uncertainty (k = 2)."""
    sem = max((p.sd_kpa / math.sqrt(p.n) for p in points if p.n > 0), default=0.0)
    return Uncertainty(reference_u_kpa / 2.0, WIRE_RESOLUTION_KPA / math.sqrt(12.0), sem,
                       (hysteresis or 0.0) / math.sqrt(12.0),
                       (repeatability or 0.0) / math.sqrt(12.0))


DECISION_RULE = (
    "Guarded acceptance (ILAC-G8:09/2019, guard band w = U): a point conforms when "
    "|error| + U <= tolerance, where U is the expanded uncertainty (k = 2, about 95 %) "
    "of the error. A point with |error| <= tolerance < |error| + U is within tolerance but "
    "conformity is not demonstrated and it counts as a fail. The cup passes when every "
    "point conforms; the device passes when every cup does. The result rests on the "
    "as-left errors (re-measured with the new coefficients where the bench could be "
    "stepped automatically, otherwise computed from the calibration points).")


def decide(error_kpa: float, u_kpa: float, tolerance_kpa: float) -> str:
    """'pass', 'fail' (outside tolerance) or 'not demonstrated' (guard band)."""
    e = abs(error_kpa)
    if e + u_kpa <= tolerance_kpa:
        return "pass"
    if e > tolerance_kpa:
        return "fail"
    return "not demonstrated"


@dataclass(frozen=True)
class ErrorTable:
    """Errors of one cup in one state ('as found' / 'as left'), with the
    decision per point and overall."""

    state: str
    method: str
    points: tuple[CalPoint, ...]
    uncertainty: Uncertainty
    tolerance_kpa: float
    span_kpa: float

    @property
    def max_abs_error_kpa(self) -> float:
        return max((abs(p.error_kpa) for p in self.points), default=math.nan)

    @property
    def decisions(self) -> list[str]:
        u = self.uncertainty.expanded
        return [decide(p.error_kpa, u, self.tolerance_kpa) for p in self.points]

    @property
    def passed(self) -> bool:
        return bool(self.points) and all(d == "pass" for d in self.decisions)

    def to_dict(self) -> dict[str, Any]:
        m = self.max_abs_error_kpa
        return {
            "state": self.state, "method": self.method,
            "max_abs_error_kpa": m,
            "max_abs_error_pct_span": 100.0 * m / self.span_kpa if self.span_kpa > 0 else None,
            "expanded_uncertainty_kpa": self.uncertainty.expanded,
            "uncertainty": self.uncertainty.to_dict(),
            "tolerance_kpa": self.tolerance_kpa, "pass": self.passed,
            "points": [dict(p.to_dict(), decision=d)
                       for p, d in zip(self.points, self.decisions, strict=True)],
        }


@dataclass(frozen=True)
class CupResult:
    """Everything a certificate says about one cup."""

    cup: int
    as_found: ErrorTable
    fit: Fit
    as_left: ErrorTable
    as_left_computed: ErrorTable
    verified: bool
    hysteresis_kpa: float | None
    nonlinearity_kpa: float | None
    repeatability_kpa: float | None
    before: CupState

    @property
    def passed(self) -> bool:
        return self.as_left.passed and (not self.verified or self.as_left_computed.passed)

    @property
    def result(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {
            "cup": self.cup, "result": self.result, "pass": self.passed,
            "as_found": self.as_found.to_dict(), "as_left": self.as_left.to_dict(),
            "as_left_computed": self.as_left_computed.to_dict(), "verified": self.verified,
            "fit": self.fit.to_dict(), "hysteresis_kpa": self.hysteresis_kpa,
            "nonlinearity_kpa": self.nonlinearity_kpa,
            "repeatability_kpa": self.repeatability_kpa,
            "before": {"coeffs": list(self.before.poly.coeffs),
                       "applied_by": "device" if self.before.device_applies else "host",
                       "basis": self.before.basis},
            "points": [p.to_dict() for p in self.as_found.points],
        }


def analyse_cup(cup: int, points: Sequence[CalPoint], tolerance: Tolerance, *,
                reference_u_kpa: float = 0.0, before: CupState = CupState(),
                verify_points: Sequence[CalPoint] | None = None,
                min_gain_kpa: float = QUAD_MIN_GAIN_KPA, span_kpa: float | None = None) -> CupResult:
    """As-found errors, fit, as-left errors (computed; re-measured if
    ``verify_points`` are given), hysteresis, non-linearity, repeatability and
    the decision for one cup's points."""
    pts = [p for p in points if p.cup == cup]
    if not pts:
        raise CalibrationError(f"cup {cup}: no calibration points were taken")
    if span_kpa is None:
        span_kpa = max(p.nominal_kpa for p in pts) - min(p.nominal_kpa for p in pts)
    tol = tolerance.kpa(span_kpa)
    hyst = hysteresis_kpa(pts)
    rep = repeatability_kpa(pts)
    found = ErrorTable("as found", before.basis, tuple(pts),
                       uncertainty(pts, reference_u_kpa, hyst, rep), tol, span_kpa)
    fit = fit_points([p.raw_kpa for p in pts], [p.reference_kpa for p in pts], min_gain_kpa)
    poly = fit.poly
    # Indications' spread -> raw spread (/ old gain) -> new indications (* new gain).
    scale = abs(poly.c1) / max(abs(before.poly.c1), 1e-9)
    left_pts = tuple(replace(p, indicated_kpa=float(poly(p.raw_kpa)), sd_kpa=p.sd_kpa * scale)
                     for p in pts)
    hyst_left = hysteresis_kpa(left_pts)
    computed = ErrorTable("as left", "computed: the new coefficients applied to the raw "
                          "readings of the calibration points", left_pts,
                          uncertainty(left_pts, reference_u_kpa, hyst_left, rep), tol, span_kpa)
    left, verified = computed, False
    if verify_points:
        vp = tuple(p for p in verify_points if p.cup == cup)
        if vp:
            # The verification has no falling series of its own: carry the
            # instrument's hysteresis over from the calibration points.
            left = ErrorTable("as left", "re-measured with the new coefficients applied", vp,
                              uncertainty(vp, reference_u_kpa, hyst_left, rep), tol, span_kpa)
            verified = True
    return CupResult(cup, found, fit, left, computed, verified, hyst, nonlinearity_kpa(pts),
                     rep, before)


# --------------------------------------------------------------------------
# Device commands
# --------------------------------------------------------------------------

def device_command(link: Source, cmd: Command, what: str) -> Any:
    """Send ``cmd`` and wait for its ACK; any failure is one CalibrationError line."""
    try:
        return link.command(cmd)
    except LinkError as exc:
        raise CalibrationError(f"{what}: {exc}") from None


def read_device_cal(link: Source, cup: int) -> tuple[Poly, bool]:
    """READ_CAL of one cup: (coefficients, valid)."""
    ack = device_command(link, Command(MsgType.READ_CAL, cup=cup), f"reading cup {cup}'s calibration")
    got, coeffs, valid = decode_cal_data(ack.data)
    if got != cup:
        raise CalibrationError(f"cup {cup}: the device's READ_CAL answer is malformed")
    return Poly(*coeffs), valid


def write_device_cal(link: Source, cup: int, poly: Poly) -> None:
    """WRITE_CAL, then READ_CAL to check the device stored what was sent
    (float32 on the wire, so compared to float32 precision)."""
    device_command(link, Command(MsgType.WRITE_CAL, cup=cup, coeffs=poly.coeffs),
                   f"writing cup {cup}'s calibration")
    back, valid = read_device_cal(link, cup)
    sent = np.asarray(poly.coeffs, dtype=np.float32)
    if not valid or not np.array_equal(np.asarray(back.coeffs, dtype=np.float32), sent):
        raise CalibrationError(f"cup {cup}: the device did not keep the coefficients written "
                               "(READ_CAL differs); check its storage")


def parse_cups(text: str | None, n_cups: int) -> list[int]:
    """``"all"``/None -> every cup; ``"1,3"`` -> [1, 3] (checked against ``n_cups``)."""
    if text is None or str(text).strip().lower() in ("", "all"):
        return list(range(1, n_cups + 1))
    try:
        cups = sorted({int(v) for v in str(text).replace(";", ",").split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"--cups takes 'all' or numbers like 1,2, not {text!r}") from None
    bad = [c for c in cups if not 1 <= c <= n_cups]
    if not cups or bad:
        raise ValueError(f"cup {bad[0] if bad else text} is outside 1..{n_cups} on this device")
    return cups


def add_months(when: float, months: int) -> float:
    """Unix time ``months`` calendar months after ``when`` (day clipped to the month)."""
    d = _dt.datetime.fromtimestamp(when).astimezone()
    m = d.month - 1 + int(months)
    year, month = d.year + m // 12, m % 12 + 1
    day = min(d.day, calendar.monthrange(year, month)[1])
    return d.replace(year=year, month=month, day=day).timestamp()


# --------------------------------------------------------------------------
# A whole calibration
# --------------------------------------------------------------------------

@dataclass
class CalibrationOptions:
    """Settings of one calibration (each a ``cupcal calibrate`` flag)."""

    cups: list[int] | None = None
    points: tuple[float, ...] = DEFAULT_POINTS_KPA
    falling: bool = True
    repeats: int = 0
    tolerance: Tolerance = field(default_factory=Tolerance)
    settle: SettleCriteria = field(default_factory=SettleCriteria)
    verify: bool | None = None
    reference_u_kpa: float = 0.0
    min_gain_kpa: float = QUAD_MIN_GAIN_KPA
    technician: str = ""
    reference_id: str = ""
    reference_cert: str = ""
    ambient: dict[str, float] = field(default_factory=dict)
    due_months: int = DUE_MONTHS
    laboratory: str = ""
    customer: str = ""
    location: str = ""


@dataclass
class CalibrationRun:
    """A finished (or aborted) calibration of one device."""

    info: DeviceInfo
    source: str
    options: CalibrationOptions
    cups: list[int]
    bench: str
    reference: str
    reference_kind: str
    started_wall: float
    finished_wall: float = 0.0
    points: list[CalPoint] = field(default_factory=list)
    verify_points: list[CalPoint] = field(default_factory=list)
    results: list[CupResult] = field(default_factory=list)
    states: dict[int, CupState] = field(default_factory=dict)
    aborted: bool = False
    abort_reason: str = ""
    device_applies: bool = False
    written: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    restored: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    certificate_id: str = ""
    calibration_ids: dict[int, int] = field(default_factory=dict)

    @property
    def span_kpa(self) -> float:
        return max(self.options.points) - min(self.options.points)

    @property
    def passed(self) -> bool:
        return (not self.aborted and bool(self.results)
                and len(self.results) == len(self.cups) and all(r.passed for r in self.results))

    @property
    def result(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def due_wall(self) -> float:
        return add_months(self.finished_wall or self.started_wall, self.options.due_months)


def current_states(link: Source, info: DeviceInfo, cups: Sequence[int],
                   db: Any = None) -> dict[int, CupState]:
    """Each cup's calibration as found: the device's own coefficients
    (CAL_ON_DEVICE, READ_CAL) or the calibration the host would apply
    (the newest valid one stored for this device and cup)."""
    states: dict[int, CupState] = {}
    if info.flags & InfoFlags.CAL_ON_DEVICE:
        for cup in cups:
            poly, valid = read_device_cal(link, cup)
            states[cup] = CupState(poly if valid else IDENTITY, True,
                                   "device's own coefficients (READ_CAL)" if valid
                                   else "device reports no calibration stored")
        return states
    from monitor.cal_apply import in_force  # a late import: cal_apply builds on this module

    records = in_force(db, info.serial, cups)
    for cup in cups:
        rec = records.get(cup)
        if rec is None:
            states[cup] = CupState(IDENTITY, False, "no calibration stored (raw readings)")
        else:
            states[cup] = CupState(Poly(rec["c0"], rec["c1"], rec["c2"]), False,
                                   f"calibration #{rec['id']} of "
                                   f"{_dt.datetime.fromtimestamp(rec['created_wall']):%Y-%m-%d} "
                                   "applied by the host")
    return states


def run_calibration(link: Source, sampler: Sampler, bench: Bench, reference: Reference,
                    options: CalibrationOptions, ui: Prompter | None = None,
                    stop: threading.Event | None = None, db: Any = None) -> CalibrationRun:
    """Calibrate the cups of the device behind ``link`` (module doc). The link
    must be connected and ``sampler`` listening to it. Raises CalibrationError
    (one line) when the device cannot be used; an abort returns the run with
    ``aborted`` set and the points taken so far."""
    ui = ui or QuietPrompter()
    stop = stop or threading.Event()
    info = link.info
    if info is None:
        raise CalibrationError("the device sent no INFO (serial number): cupcal needs a cupmon "
                               "device speaking the binary protocol")
    cups = list(options.cups) if options.cups else list(range(1, info.cups + 1))
    if any(not 1 <= c <= info.cups for c in cups):
        raise CalibrationError(f"this device has cups 1..{info.cups}")
    run = CalibrationRun(info, getattr(link, "url", ""), options, cups, bench.describe(),
                         reference.describe(), reference.kind, time.time())
    run.device_applies = bool(info.flags & InfoFlags.CAL_ON_DEVICE)
    run.states = current_states(link, info, cups, db)
    # Pumps off, valves closed: the bench alone sets the pressure. (Not VENT:
    # an open valve would bleed the bench manifold.)
    device_command(link, Command(MsgType.STOP, mask=cup_mask(cups)), "stopping the pumps")
    ui.say(f"Calibrating {info.serial} cups {', '.join(map(str, cups))}: "
           f"{len(options.points)} points, settle {options.settle.describe()}.")
    proc = Procedure(sampler, cups, bench, reference, options.settle, ui, run.states, stop)
    run.points = proc.run(make_plan(options.points, options.falling, options.repeats))
    if proc.aborted:
        run.aborted, run.abort_reason = True, proc.abort_reason
        run.finished_wall = time.time()
        return run
    fits = {c: analyse_cup(c, run.points, options.tolerance, before=run.states[c],
                           reference_u_kpa=options.reference_u_kpa,
                           min_gain_kpa=options.min_gain_kpa, span_kpa=run.span_kpa).fit
            for c in cups}
    verify = options.verify if options.verify is not None else (bench.automatic
                                                                 and reference.automatic)
    if verify:
        run.verify_points = _verify(link, run, sampler, bench, reference, fits, ui, stop)
    run.results = [analyse_cup(c, run.points, options.tolerance, before=run.states[c],
                               reference_u_kpa=options.reference_u_kpa,
                               verify_points=run.verify_points or None,
                               min_gain_kpa=options.min_gain_kpa, span_kpa=run.span_kpa)
                   for c in cups]
    if run.device_applies:
        _settle_device_coefficients(link, run, fits, ui)
    run.finished_wall = time.time()
    return run


def _verify(link: Source, run: CalibrationRun, sampler: Sampler, bench: Bench,
            reference: Reference, fits: dict[int, Fit], ui: Prompter,
            stop: threading.Event) -> list[CalPoint]:
    """Re-measure the rising series with the new coefficients applied."""
    states: dict[int, CupState] = {}
    for cup, fit in fits.items():
        if run.device_applies:
            write_device_cal(link, cup, fit.poly)
            run.written[cup] = fit.poly.coeffs
            states[cup] = CupState(IDENTITY, True, "new coefficients on the device")
        else:
            states[cup] = CupState(fit.poly, False, "new coefficients applied by the host")
    ui.say("Verifying: re-measuring the rising series with the new coefficients applied.")
    proc = Procedure(sampler, run.cups, bench, reference, run.options.settle, ui, states, stop)
    pts = proc.run(make_plan(run.options.points, falling=False, series=VERIFY))
    if proc.aborted:
        run.notes.append(f"verification {proc.abort_reason}: as-left errors are computed only")
        return []
    return pts


def _settle_device_coefficients(link: Source, run: CalibrationRun, fits: dict[int, Fit],
                                ui: Prompter) -> None:
    """A device that applies calibration itself keeps the new coefficients of
    the cups that passed and gets its old ones back for the cups that failed,
    so what it applies always matches a valid stored record."""
    for res in run.results:
        cup = res.cup
        if res.passed and cup not in run.written:
            write_device_cal(link, cup, fits[cup].poly)
            run.written[cup] = fits[cup].poly.coeffs
        elif not res.passed and cup in run.written:
            old = run.states[cup].poly
            write_device_cal(link, cup, old)
            run.restored[cup] = old.coeffs
            run.written.pop(cup, None)
            ui.say(f"Cup {cup} failed: its previous coefficients were written back.")


def store_run(run: CalibrationRun, db: Any = None) -> dict[int, int]:
    """Record the run in the session database, one row per cup: valid when
    the cup passed (it is then applied on the next connect), kept but invalid
    when it failed or the run was aborted. Returns {cup: calibration id}."""
    from monitor.store import Store

    ids: dict[int, int] = {}
    by_cup = {r.cup: r for r in run.results}
    with Store(db) as store:
        for cup in run.cups:
            res = by_cup.get(cup)
            if res is None:
                pts = [p.to_dict() for p in run.points if p.cup == cup]
                ids[cup] = store.add_calibration(
                    run.info.serial, cup, run.states[cup].poly.coeffs,
                    technician=run.options.technician, reference_id=run.options.reference_id,
                    reference_cert=run.options.reference_cert, ambient=run.options.ambient,
                    as_found={"points": pts, "aborted": run.abort_reason}, as_left=None,
                    result="ABORTED" if run.aborted else "FAIL", due_wall=None,
                    certificate_id=run.certificate_id or None, valid=False,
                    created_wall=run.finished_wall or time.time())
                continue
            ids[cup] = store.add_calibration(
                run.info.serial, cup, res.fit.poly.coeffs, technician=run.options.technician,
                reference_id=run.options.reference_id, reference_cert=run.options.reference_cert,
                ambient=run.options.ambient, as_found=res.as_found.to_dict(),
                as_left=res.as_left.to_dict(), result=res.result, due_wall=run.due_wall,
                certificate_id=run.certificate_id or None, valid=res.passed,
                created_wall=run.finished_wall)
    run.calibration_ids = ids
    return ids


# --------------------------------------------------------------------------
# Zero (tare at ambient)
# --------------------------------------------------------------------------

#: A cup is open to ambient when its steady reading is within this of zero (kPa).
ZERO_MAX_KPA = 2.0


@dataclass(frozen=True)
class ZeroResult:
    """One cup's zero: reading before and after (kPa)."""

    cup: int
    before_kpa: float
    after_kpa: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def zero_cups(link: Source, sampler: Sampler, cups: Sequence[int], *,
              settle: SettleCriteria | None = None, max_kpa: float = ZERO_MAX_KPA,
              vent: bool = False, force: bool = False, db: Any = None,
              stop: threading.Event | None = None) -> list[ZeroResult]:
    """Tare ``cups`` at ambient with ZERO, only when each is open to ambient:
    not pumping or regulating, its reading steady (``settle``) and within
    ``max_kpa`` of zero. A cup with a valid calibration is refused unless
    ``force`` (the calibration was made on the old zero). ``vent`` opens the
    valves first. Raises CalibrationError listing every refusal; nothing is
    zeroed then. Returns the readings before and after."""
    settle = settle or SettleCriteria(band_kpa=0.1, time_s=2.0, timeout_s=30.0)
    info = link.info
    if info is None:
        raise CalibrationError("the device sent no INFO: ZERO needs a cupmon binary device")
    cups = list(cups)
    cols = [c - 1 for c in cups]
    if vent:
        device_command(link, Command(MsgType.VENT, mask=cup_mask(cups)), "venting")
    sampler.wait_newer(None, NO_DATA_S)
    start = sampler.latest_t
    try:
        readings = wait_settled(sampler, cols, settle, after_t=start, stop=stop,
                                what="the reading at ambient")
    except CalibrationError as exc:
        raise CalibrationError(f"refused: {exc}; a cup at ambient reads steady") from None
    t, _, st = sampler.window(readings[0].t0, readings[0].t1)
    problems = []
    for cup, col, r in zip(cups, cols, readings, strict=True):
        busy = st[:, col] & int(Status.PUMP_ON | Status.REGULATING) if st.size else 0
        if np.any(busy):
            problems.append(f"cup {cup} is pumping or regulating (VENT or STOP it, or use --vent)")
        elif abs(r.mean_kpa) > max_kpa:
            problems.append(f"cup {cup} reads {r.mean_kpa:.2f} kPa, not within +-{max_kpa:g} kPa of "
                            "zero: it is not open to ambient (vent it or take it off)")
    if not force:
        states = current_states(link, info, cups, db)
        for cup in cups:
            s = states[cup]
            if not s.poly.is_identity:
                problems.append(f"cup {cup} has a calibration ({s.basis}) made on the present "
                                "zero; a new zero shifts it: recalibrate after zeroing (--force "
                                "to zero anyway)")
    if problems:
        raise CalibrationError("refused: " + "; ".join(problems))
    device_command(link, Command(MsgType.ZERO, mask=cup_mask(cups)), "zeroing")
    after_t = sampler.latest_t
    try:
        after = wait_settled(sampler, cols, settle, after_t=after_t, stop=stop,
                             what="the reading after ZERO")
        after_vals: list[float | None] = [r.mean_kpa for r in after]
    except CalibrationError:
        after_vals = [None] * len(cups)
    return [ZeroResult(c, r.mean_kpa, a) for c, r, a in zip(cups, readings, after_vals, strict=True)]
