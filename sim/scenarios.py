"""Scenario library: scripted sessions with injected faults and their ground truth.

A :class:`Scenario` turns (cups, rate, seed, duration, params) into a
:class:`Script`: a timeline of actions (a practitioner applying and starting
cups, a seal failing, a pump dying, ambient pressure rising...) plus the
ground truth of what it injects. ``SCENARIOS`` is the registry;
``list_scenarios()`` gives (name, one-line description) pairs.

Parameters are flat ``name=value`` pairs (they arrive from URLs and the
command line as strings or numbers and are coerced to the type of their
default). Every scenario takes the common ones in ``COMMON_PARAMS``
(physics, sensor, device, session) and its own; ``Scenario.params`` lists
both with one-line docs. Times are device-clock seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge import conditions as cond
from sim.physics import AMBIENT_KPA, L_MIN, CupPhysics
from sim.sensor import SensorFault, SensorParams
from sim.truth import TruthRecord

_CP = CupPhysics()
_SP = SensorParams()

#: name -> (default, one-line doc). Shared by every scenario.
COMMON_PARAMS: dict[str, tuple[object, str]] = {
    # physics (sim.physics.CupPhysics)
    "cup_volume_ml": (_CP.volume_ml, "empty cup volume V0, mL"),
    "tissue_ml_per_kpa": (_CP.tissue_ml_per_kpa, "tissue dome volume per kPa suction k, mL/kPa"),
    "pump_flow_l_min": (_CP.pump_flow_l_min, "pump free-air flow, L/min"),
    "pump_max_kpa": (_CP.pump_max_kpa, "pump maximum suction (throughput 0 there), kPa"),
    "seal_leak_l_min": (_CP.seal_leak_l_min, "healthy seal leak conductance, L/min"),
    "leak_spread": (0.5, "per-cup seal leak varies by +-this fraction (seeded)"),
    "valve_l_min": (_CP.valve_l_min, "open vent valve conductance, L/min"),
    "open_l_min": (_CP.open_l_min, "conductance of a cup off the skin / detached, L/min"),
    "ambient_kpa": (AMBIENT_KPA, "ambient pressure, kPa absolute"),
    # device
    "band_low_kpa": (cond.BAND_LOW_KPA, "target band low edge, kPa suction"),
    "band_high_kpa": (cond.BAND_HIGH_KPA, "target band high edge, kPa suction"),
    "hard_limit_kpa": (cond.HARD_LIMIT_KPA, "interlock hard limit, kPa suction"),
    "interlock": (True, "hardware interlock fitted"),
    "cal_on_device": (False, "device applies WRITE_CAL coefficients itself"),
    "t0_s": (0.0, "device clock at the first sample, s (4290 tests the 2^32 us wrap)"),
    # sensor (sim.sensor.SensorParams)
    "sensor": (_SP.kind, "gauge (MPXV6115V) or absolute (MPXA6115A)"),
    "sensor_offset_kpa": (0.0, "sensor offset error, kPa (number or per-cup list 'a,b,..')"),
    "sensor_gain": (1.0, "sensor gain (1 = exact; number or per-cup list)"),
    "noise_kpa": (_SP.noise_kpa, "sensor noise, kPa rms"),
    "ripple": (_SP.ripple, "supply ripple, fraction of the supply"),
    "ripple_hz": (_SP.ripple_hz, "supply ripple frequency, Hz"),
    "adc_bits": (_SP.adc_bits, "ADC resolution, bits"),
    "lag_s": (_SP.lag_s, "sensor first-order time constant, s"),
    "stuck_detect_s": (_SP.stuck_detect_s, "same ADC code this long = sensor stuck, s"),
    "fault_clear_s": (_SP.fault_clear_s, "sensor fault flag clears after this long clean, s"),
    # session
    "stagger_s": (2.0, "cups applied this far apart (capped so all start within 20 s)"),
    "hold_s": (math.inf, "each cup vented this long after its start (inf = never)"),
}

#: Parameters that take one value per cup ("a,b,c" or a sequence) as well as a number.
PER_CUP_PARAMS = frozenset({
    "cup_volume_ml", "tissue_ml_per_kpa", "pump_flow_l_min", "pump_max_kpa",
    "seal_leak_l_min", "sensor_offset_kpa", "sensor_gain",
})


@dataclass(frozen=True)
class Action:
    """Something that happens to a cup at a scripted time (0-based cup, -1 = all)."""

    t: float
    cup: int
    kind: str
    value: object = None


@dataclass
class Script:
    """What a scenario does, known before the run.

    actions: timeline (any order; the engine sorts it).
    ambient: (t s, kPa abs) breakpoints of a piecewise-linear ambient, or empty.
    silent: [a, b) windows in which the device transmits nothing.
    lost: [a, b) windows in which every frame is lost on the link (seq used).
    drop_prob: chance per sample of an isolated frame lost on the link.
    link_corruption_rate: fraction of bytes corrupted on the wire.
    cup_setup: per-cup physical overrides, arrays (cups,).
    injected: ground truth of injected faults (engine aligns to samples).
    dry_run_cups: 0-based cups whose signal-defined truth needs a dry run.
    rig_steps: (t_start, t_end, set kPa) of a calibration rig.
    """

    actions: list[Action] = field(default_factory=list)
    ambient: list[tuple[float, float]] = field(default_factory=list)
    silent: list[tuple[float, float]] = field(default_factory=list)
    lost: list[tuple[float, float]] = field(default_factory=list)
    drop_prob: float = 0.0
    link_corruption_rate: float = 0.0
    cup_setup: dict[str, np.ndarray] = field(default_factory=dict)
    injected: list[TruthRecord] = field(default_factory=list)
    dry_run_cups: list[int] = field(default_factory=list)
    rig_steps: list[tuple[float, float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Setup:
    """What a builder gets: run shape and resolved parameters."""

    cups: int
    rate_hz: int
    seed: int
    duration_s: float
    p: dict[str, object]

    def cup(self) -> int:
        """The scenario's faulty cup, 0-based (param ``cup`` is 1-based, clipped)."""
        return min(max(int(self.p["cup"]), 1), self.cups) - 1

    def rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 0x5CE4, salt])


@dataclass(frozen=True)
class Scenario:
    """A named, documented script builder."""

    name: str
    description: str
    duration_s: float
    own: dict[str, tuple[object, str]]
    build: Callable[[Setup], Script]
    natural: Callable[[dict[str, object]], float] | None = None

    @property
    def params(self) -> dict[str, tuple[object, str]]:
        """Every parameter with (default, doc): common ones, then the scenario's
        own (which may override a common default)."""
        merged = dict(COMMON_PARAMS)
        merged.update(self.own)
        return merged

    def defaults(self) -> dict[str, object]:
        return {k: v[0] for k, v in self.params.items()}

    def resolve(self, params: dict[str, object]) -> dict[str, object]:
        """Defaults overlaid with ``params``, each coerced to its default's type.
        Raises ValueError naming an unknown parameter or a bad value."""
        out = self.defaults()
        for key, value in params.items():
            if key not in out:
                known = ", ".join(sorted(out))
                raise ValueError(f"unknown parameter {key!r} for {self.name} (known: {known})")
            out[key] = _coerce(key, value, out[key])
        return out

    def natural_duration(self, params: dict[str, object]) -> float:
        """Default run length (s) for resolved ``params``."""
        return self.natural(params) if self.natural is not None else self.duration_s

    def script(self, cups: int, rate_hz: int, seed: int, duration_s: float,
               params: dict[str, object]) -> Script:
        return self.build(Setup(cups, rate_hz, seed, duration_s, params))


def _coerce(key: str, value: object, default: object) -> object:
    if isinstance(default, bool):
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{key}={value!r} is not true/false")
        return bool(value)
    if isinstance(default, int):
        try:
            f = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"{key}={value!r} is not an integer") from None
        if f != int(f):
            raise ValueError(f"{key}={value!r} is not an integer")
        return int(f)
    if isinstance(default, float):
        if key in PER_CUP_PARAMS and (isinstance(value, str) and "," in value
                                      or isinstance(value, list | tuple)):
            return value  # per-cup list, checked by per_cup()
        try:
            f = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"{key}={value!r} is not a number") from None
        if math.isnan(f):
            raise ValueError(f"{key} is NaN")
        return f
    return str(value)


def per_cup(value: object, cups: int, key: str = "value") -> np.ndarray:
    """A number or a per-cup list ('a,b,c' or a sequence) as a float array (cups,)."""
    if isinstance(value, str):
        value = [v for v in value.replace(";", ",").split(",") if v.strip()]
    if isinstance(value, list | tuple | np.ndarray):
        vals = np.asarray([float(v) for v in value], dtype=float)
        if vals.shape[0] == 1:
            return np.full(cups, vals[0])
        if vals.shape[0] != cups:
            raise ValueError(f"{key} lists {vals.shape[0]} values for {cups} cups")
        return vals
    return np.full(cups, float(value))  # type: ignore[arg-type]


# --- building blocks ------------------------------------------------------------------

def session(s: Setup, hold_s: float | None = None, skip_vent: tuple[int, ...] = ()
            ) -> tuple[list[Action], np.ndarray]:
    """A practitioner's session: cup c is applied at 1 + c*stagger s, started
    1 s later (REGULATING), vented ``hold_s`` after its start and taken off 3 s
    after that. Returns (actions, start times (cups,))."""
    hold = float(s.p["hold_s"]) if hold_s is None else hold_s
    stagger = min(float(s.p["stagger_s"]), 20.0 / s.cups)
    actions: list[Action] = []
    starts = np.empty(s.cups)
    for c in range(s.cups):
        ta = 1.0 + c * stagger
        ts = ta + 1.0
        starts[c] = ts
        actions += [Action(ta, c, "apply"), Action(ts, c, "start")]
        if math.isfinite(hold) and c not in skip_vent:
            actions += [Action(ts + hold, c, "vent"), Action(ts + hold + 3.0, c, "remove")]
    return actions, starts


def _released(actions: list[Action], cup: int, after: float) -> float | None:
    """When the script vents or removes ``cup`` after ``after`` (None: never)."""
    ts = [a.t for a in actions if a.cup == cup and a.kind in ("vent", "remove", "stop")
          and a.t >= after]
    return min(ts) if ts else None


def _fault(s: Setup, actions: list[Action], name: str, t: float,
           t_end: float | None = None) -> TruthRecord:
    c = s.cup()
    rel = _released(actions, c, t)
    if rel is not None and (t_end is None or rel < t_end):
        t_end = rel
    return TruthRecord(c + 1, name, t, t_end)


def _seal_leaks(s: Setup) -> np.ndarray:
    spread = float(s.p["leak_spread"])
    u = s.rng(1).uniform(1.0 - spread, 1.0 + spread, s.cups)
    return per_cup(s.p["seal_leak_l_min"], s.cups, "seal_leak_l_min") * u


def _base(s: Setup, hold_s: float | None = None, skip_vent: tuple[int, ...] = ()
          ) -> tuple[Script, np.ndarray]:
    actions, starts = session(s, hold_s, skip_vent)
    return Script(actions=actions, cup_setup={"seal_leak_l_min": _seal_leaks(s)}), starts


# --- scenarios ------------------------------------------------------------------------

def _normal(s: Setup) -> Script:
    return _base(s)[0]


def _slow_leak(s: Setup) -> Script:
    sc, _ = _base(s)
    c, t = s.cup(), float(s.p["fault_at_s"])
    sc.actions.append(Action(t, c, "leak", float(s.p["leak_l_min"]) * L_MIN))
    sc.injected.append(_fault(s, sc.actions, cond.LEAK, t))
    sc.dry_run_cups = [c]
    return sc


def _cup_detached(s: Setup) -> Script:
    sc, _ = _base(s)
    c, t = s.cup(), float(s.p["fault_at_s"])
    sc.actions.append(Action(t, c, "detach"))
    sc.injected.append(_fault(s, sc.actions, cond.DETACHED, t))
    sc.dry_run_cups = [c]
    return sc


def _over_suction(s: Setup) -> Script:
    sc, _ = _base(s)
    c, t = s.cup(), float(s.p["fault_at_s"])
    sc.actions.append(Action(t, c, "pump_stuck", float(s.p["stuck_flow_fraction"])))
    sc.dry_run_cups = [c]  # over_suction and interlock come from the true signal
    return sc


def _under_suction(s: Setup) -> Script:
    sc, _ = _base(s)
    c = s.cup()
    sc.actions.append(Action(0.0, c, "pump_weak",
                             (float(s.p["weak_flow_l_min"]) * L_MIN, float(s.p["weak_max_kpa"]))))
    sc.dry_run_cups = [c]
    return sc


def _pump_failure(s: Setup) -> Script:
    sc, _ = _base(s)
    c, t = s.cup(), float(s.p["fault_at_s"])
    sc.cup_setup["seal_leak_l_min"][c] = float(s.p["cup_leak_l_min"])
    sc.actions.append(Action(t, c, "pump_dead"))
    # A cup-side sensor cannot tell a dead pump from a blocked line: both are
    # "pump driven, no flow reaches the cup" -> the blockage condition.
    sc.injected.append(_fault(s, sc.actions, cond.BLOCKAGE, t))
    sc.dry_run_cups = [c]
    return sc


def _blocked_line(s: Setup) -> Script:
    sc, _ = _base(s)
    c, t = s.cup(), float(s.p["fault_at_s"])
    sc.cup_setup["seal_leak_l_min"][c] = float(s.p["cup_leak_l_min"])
    sc.actions.append(Action(t, c, "block", float(s.p["block_fraction"])))
    sc.injected.append(_fault(s, sc.actions, cond.BLOCKAGE, t))
    sc.dry_run_cups = [c]
    return sc


def _sensor_fault(s: Setup) -> Script:
    sc, _ = _base(s)
    c, t = s.cup(), float(s.p["fault_at_s"])
    kind = SensorFault.parse(str(s.p["fault"]))
    dur = float(s.p["fault_duration_s"])
    sc.actions.append(Action(t, c, "sensor_fault", (int(kind), float(s.p["dropout_rate"]))))
    t_end = None
    if dur > 0:
        t_end = t + dur
        sc.actions.append(Action(t_end, c, "sensor_ok"))
    sc.injected.append(_fault(s, sc.actions, cond.SENSOR_FAULT, t, t_end))
    sc.dry_run_cups = [c]
    return sc


def _signal_loss(s: Setup) -> Script:
    sc, _ = _base(s)
    t = float(s.p["fault_at_s"])
    sc.silent.append((t, t + float(s.p["gap_s"])))
    return sc  # the engine turns silent windows into signal_loss truth


def _noisy_link(s: Setup) -> Script:
    sc, _ = _base(s)
    sc.link_corruption_rate = float(s.p["corruption_rate"])
    return sc


def _dropped_frames(s: Setup) -> Script:
    sc, _ = _base(s)
    sc.drop_prob = float(s.p["drop_prob"])
    burst = float(s.p["burst_s"])
    if burst > 0:
        t = float(s.p["burst_at_s"])
        sc.lost.append((t, t + burst))
    return sc


def _ambient_change(s: Setup) -> Script:
    sc, _ = _base(s)
    a0, a1 = float(s.p["ambient_start_kpa"]), float(s.p["ambient_end_kpa"])
    t0, rate = float(s.p["descent_at_s"]), abs(float(s.p["ambient_rate_kpa_s"]))
    t1 = t0 + (abs(a1 - a0) / rate if rate > 0 else math.inf)
    sc.ambient = [(0.0, a0), (t0, a0)] + ([(t1, a1)] if math.isfinite(t1) else [])
    sc.dry_run_cups = list(range(s.cups))
    return sc


def _dwell_exceeded(s: Setup) -> Script:
    c = s.cup()
    # The engine derives dwell_exceeded (start + DWELL_ADVISORY_S) from the script.
    return _base(s, skip_vent=(c,))[0]


def _rig_points(s: Setup) -> list[float]:
    pts = [float(v) for v in str(s.p["points"]).replace(";", ",").split(",") if v.strip()]
    if not pts:
        raise ValueError("points lists no pressure")
    if bool(s.p["falling"]):
        pts = pts + pts[-2::-1]
    return pts


def _calibration_rig(s: Setup) -> Script:
    sc = Script(cup_setup={"seal_leak_l_min": np.zeros(s.cups)})
    step, t = float(s.p["step_s"]), float(s.p["settle0_s"])
    for c in range(s.cups):
        sc.actions.append(Action(0.0, c, "apply"))
    sc.actions.append(Action(0.0, -1, "rig_tau", float(s.p["rig_tau_s"])))
    for kpa in _rig_points(s):
        sc.actions.append(Action(t, -1, "rig", kpa))
        sc.rig_steps.append((t, t + step, kpa))
        t += step
    sc.dry_run_cups = list(range(s.cups))  # steps above 26 kPa are over_suction by definition
    return sc


def _pump_test(s: Setup) -> Script:
    sc = Script(cup_setup={"seal_leak_l_min": per_cup(s.p["test_leak_l_min"], s.cups)})
    for c in range(s.cups):
        sc.actions.append(Action(0.0, c, "apply"))
    t_on = float(s.p["pump_on_at_s"])
    if t_on >= 0:
        for c in range(s.cups):
            sc.actions.append(Action(t_on, c, "pump_force", True))
    return sc


def _with_cup(own: dict[str, tuple[object, str]]) -> dict[str, tuple[object, str]]:
    """A fault scenario's own parameters plus ``cup``."""
    return {"cup": (2, "the cup the fault hits, 1-based (clipped to the cup count)"), **own}


def _rig_duration(p: dict[str, object]) -> float:
    s = Setup(1, 100, 0, 0.0, p)
    return float(p["settle0_s"]) + len(_rig_points(s)) * float(p["step_s"])


SCENARIOS: dict[str, Scenario] = {sc.name: sc for sc in [
    Scenario("normal", "a healthy session: cups applied in turn, held ~9.5 min, vented; no faults",
             720.0, {"hold_s": (570.0, "each cup vented this long after its start, s "
                                       "(< DWELL_ADVISORY_S, so the truth stays empty)")},
             _normal),
    Scenario("slow_leak", "a cup's seal starts leaking: the pump keeps topping it up",
             90.0, _with_cup({
                 "fault_at_s": (30.0, "leak starts at, s"),
                 "leak_l_min": (0.5, "added leak conductance, L/min")}),
             _slow_leak),
    Scenario("cup_detached", "a cup loses its seal: suction collapses, the pump runs on",
             60.0, _with_cup({
                 "fault_at_s": (30.0, "seal lost at, s")}), _cup_detached),
    Scenario("over_suction", "a cup's pump driver sticks on: suction climbs until the interlock vents",
             60.0, _with_cup({
                 "fault_at_s": (30.0, "driver sticks on at, s"),
                 "stuck_flow_fraction": (
                     0.15, "pump speed while stuck (PWM duty; 1 = full, interlock in <1 s)")}),
             _over_suction),
    Scenario("under_suction", "a cup's worn pump plateaus below the band",
             60.0, _with_cup({
                 "weak_flow_l_min": (1.0, "worn pump free flow, L/min"),
                 "weak_max_kpa": (16.0, "worn pump maximum suction, kPa")}),
             _under_suction),
    Scenario("pump_failure", "a cup's pump stops moving air while still driven; suction leaks away",
             90.0, _with_cup({
                 "fault_at_s": (30.0, "pump fails at, s"),
                 "cup_leak_l_min": (0.1, "that cup's seal leak, L/min")}),
             _pump_failure),
    Scenario("blocked_line", "a cup's hose blocks: the pump runs, the cup does not follow",
             90.0, _with_cup({
                 "fault_at_s": (30.0, "line blocks at, s"),
                 "block_fraction": (1.0, "fraction of the pump's flow blocked"),
                 "cup_leak_l_min": (0.05, "that cup's seal leak, L/min")}),
             _blocked_line),
    Scenario("sensor_fault", "a cup's pressure sensor fails (stuck, rail or dropout)",
             60.0, _with_cup({
                 "fault_at_s": (30.0, "sensor fails at, s"),
                 "fault": ("stuck", "stuck, rail_high, rail_low or dropout"),
                 "fault_duration_s": (0.0, "fault lasts this long (0 = to the end), s"),
                 "dropout_rate": (1.0, "dropout: fraction of samples with no reading")}),
             _sensor_fault),
    Scenario("signal_loss", "the device falls silent for a few seconds, then resumes",
             60.0, {"fault_at_s": (30.0, "silence starts at, s"),
                    "gap_s": (3.0, "silence lasts, s")}, _signal_loss),
    Scenario("noisy_link", "a healthy session over a link that corrupts bytes",
             60.0, {"corruption_rate": (0.001, "fraction of bytes corrupted on the wire")},
             _noisy_link),
    Scenario("dropped_frames", "isolated frames lost on the link, and one longer burst",
             60.0, {"drop_prob": (0.01, "chance per sample of a lost frame (never two in a row)"),
                    "burst_at_s": (30.0, "burst of lost frames starts at, s"),
                    "burst_s": (0.5, "burst length, s (0 = none)")}, _dropped_frames),
    Scenario("ambient_change", "cabin pressure rises as in an aircraft descent; sealed cups pull harder",
             150.0, {"ambient_start_kpa": (75.0, "ambient before the descent, kPa abs (8000 ft cabin)"),
                     "ambient_end_kpa": (AMBIENT_KPA, "ambient after the descent, kPa abs"),
                     "descent_at_s": (20.0, "descent starts at, s"),
                     "ambient_rate_kpa_s": (0.1, "ambient rise rate, kPa/s")}, _ambient_change),
    Scenario("dwell_exceeded", "one cup is left on past the 10-minute dwell advisory",
             660.0, _with_cup({"hold_s": (570.0, "the other cups are vented after, s")}),
             _dwell_exceeded),
    Scenario("calibration_rig", "a bench chamber stepped 0-30-0 kPa for calibration; regulator off",
             5.0 + 13 * 10.0,
             {"points": ("0,5,10,15,20,25,30", "set points of the rising series, kPa"),
              "falling": (True, "repeat the points falling (EURAMET cg-17)"),
              "step_s": (10.0, "time at each point, s"),
              "settle0_s": (5.0, "first point starts at, s"),
              "rig_tau_s": (1.0, "bench chamber time constant, s"),
              "interlock": (False, "interlock fitted (off on the bench)"),
              "tissue_ml_per_kpa": (0.0, "a rigid chamber has no dome")},
             _calibration_rig, natural=_rig_duration),
    Scenario("pump_test", "cups sealed on a rigid test volume: for pump-down and hold tests",
             120.0, {"test_leak_l_min": (0.0005, "test volume leak, L/min"),
                     "pump_on_at_s": (-1.0, "drive the pump open-loop from this time (<0: never)"),
                     "tissue_ml_per_kpa": (0.0, "a rigid test volume has no dome"),
                     "interlock": (True, "interlock fitted")},
             _pump_test),
]}


def list_scenarios() -> list[tuple[str, str]]:
    """(name, one-line description) of every scenario, in registry order."""
    return [(sc.name, sc.description) for sc in SCENARIOS.values()]


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})") from None
