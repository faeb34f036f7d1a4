"""Alarm correctness, measured: the monitor's alarm events scored against the
simulator's ground truth (docs/alarms.md, "Measured alarm correctness").

Two halves:

* :func:`score` is pure: alarm events (``AlarmEvent`` or their ``to_dict()``)
  and truth records (``sim.truth.TruthRecord`` or their ``to_json()``) in, a
  :class:`ScoreReport` out: for every truth record whether a ``raised`` event
  of the same condition on the same cup came, how late, and whether within its
  bound; the raised events no truth record explains (extras); and a Markdown
  table.
* :func:`capture` / :func:`monitor_bytes` / :func:`monitor_direct` /
  :func:`run_scenario` run a scenario through the monitor entirely in device
  time: the Simulation is advanced in large chunks, encoded by the virtual
  device (``sim.device.VirtualDevice``) and decoded by
  ``firmware_bridge.codec.Decoder`` - the real byte path, including the
  noisy_link corruption and dropped frames - and the blocks and messages go
  straight into a :class:`~monitor.pipeline.MonitorPipeline` in stream order,
  as its Notifier thread would deliver them. No pty, no pacing, and **no
  on_idle ticks**: the pipeline's host clock is frozen at 0, so signal_loss can
  only come from device-time gaps in the stream (the replay rule of
  docs/alarms.md); a fake host clock could neither invent nor mask one.

Times are device seconds throughout. ``sim`` is imported only inside the
functions that run it (the monitor does not otherwise depend on the simulator).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_bridge import conditions as C
from firmware_bridge.codec import Decoder, kpa_to_raw, raw_to_kpa
from firmware_bridge.messages import DeviceEvent, LinkStats, SampleBlock
from firmware_bridge.protocol import Status

from .alarms import AlarmEvent
from .config import MonitorConfig
from .pipeline import MonitorPipeline

if TYPE_CHECKING:  # the simulator is needed only by whoever runs one
    from sim.engine import SimOutput, Simulation
    from sim.truth import TruthRecord

#: Allowance on top of every documented condition delay, s of device time (the
#: "delay + 0.1 s" of docs/alarms.md: two sample periods at 100 Hz and change).
SLACK_S = 0.1
#: A raise this long (s) before a truth record's t_start still counts as its
#: detection, reported as "early". Why it happens: a slow ramp through a raise
#: level with 0.1 kPa rms sensor noise arms the on-delay when the first noisy
#: reading crosses; the 1 kPa hysteresis then holds it (ambient_change).
EARLY_S = 5.0
#: Documented leak total (docs/alarms.md "Total alarm delay"): the pump-off decay
#: path at >= 2 kPa/s: 1 s delay + 0.5 s to lose 1 kPa + < 0.5 s pump top-up +
#: smoothing. Measured worst case at slow_leak's ~1.7 kPa/s: 2.48 s, when the leak
#: starts < 1 kPa above the pump's switch-on point (the pump's top-up restarts the
#: evidence, so 1 kPa must be lost twice: see "Measured alarm correctness").
LEAK_TOTAL_S = 2.5
#: Replay reads the capture this many bytes at a time (~2.5 s of 4 cups at 100 Hz).
REPLAY_CHUNK_BYTES = 1 << 16
#: Wall time stamped on events (fixed, so runs are reproducible).
WALL_ANCHOR = (0.0, _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC))


def default_bounds(config: MonitorConfig | None = None, rate_hz: float = 100.0
                   ) -> dict[str, float]:
    """Allowed detection latency per condition, s after the truth's reference
    time (its t_start, or the moment the fault becomes observable, see
    :func:`evidence_times`), from docs/alarms.md "Total alarm delay"."""
    c = (config or MonitorConfig()).defaults
    smooth = (config or MonitorConfig()).smooth_samples / float(rate_hz)
    return {
        C.OVER_SUCTION: c.over_delay_s + SLACK_S,
        C.UNDER_SUCTION: c.under_delay_s + SLACK_S,
        C.DETACHED: c.detached_delay_s + SLACK_S,
        C.LEAK: LEAK_TOTAL_S,
        # From the first pump run after the blockage: 2 s of run, 1 s delay, smoothing.
        C.BLOCKAGE: c.blockage_s + c.blockage_delay_s + smooth + SLACK_S,
        # The truth's t_start already includes the 0.25 s timeout: exact stamps.
        C.SIGNAL_LOSS: SLACK_S,
        C.SENSOR_FAULT: c.sensor_fault_delay_s + SLACK_S,
        C.INTERLOCK: SLACK_S,
        # The truth's t_start is REGULATING start + 600 s: exact.
        C.DWELL_EXCEEDED: SLACK_S,
    }


# ---- scoring -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Truth:
    """A truth record, normalised. ``t_ref``: the device time (s) from which its
    bound counts (t_start unless the fault is unobservable until later)."""

    cup: int | None
    condition: str
    t_start: float
    t_end: float | None
    t_ref: float

    def label(self) -> str:
        return "device" if self.cup is None else str(self.cup)


@dataclass(frozen=True, slots=True)
class Raise:
    """A ``raised`` alarm event (device s)."""

    t: float
    cup: int | None
    condition: str
    suction_kpa: float | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """How one truth record was met.

    detected: a raise of the same condition on the same cup came in its window
        (from ``EARLY_S`` before t_start to its end plus the bound).
    t_detect: that raise's device time (s); latency_s = t_detect - t_start.
    allowed_s: latency allowed (s after t_start) = (t_ref - t_start) + bound.
    right_cup / right_name: of the raise found, or of the nearest wrong one
        (same condition on another cup, or another condition on this cup).
    nearest: that wrong raise, when nothing right came.
    """

    truth: Truth
    detected: bool
    t_detect: float | None
    latency_s: float | None
    bound_s: float
    allowed_s: float
    right_cup: bool
    right_name: bool
    nearest: Raise | None = None

    @property
    def early(self) -> bool:
        return self.latency_s is not None and self.latency_s < 0

    @property
    def ok(self) -> bool:
        """Detected on the right cup with the right name, no later than allowed."""
        return (self.detected and self.right_cup and self.right_name
                and self.latency_s is not None and self.latency_s <= self.allowed_s + 1e-9)

    @property
    def result(self) -> str:
        if not self.detected:
            if self.nearest is not None:
                what = "cup" if not self.right_cup else "name"
                return (f"MISS (wrong {what}: {self.nearest.condition} cup "
                        f"{_cup(self.nearest.cup)} at {self.nearest.t:.2f})")
            return "MISS"
        if not self.ok:
            return "LATE"
        return "pass (early)" if self.early else "pass"


@dataclass(frozen=True, slots=True)
class Extra:
    """A raise no truth record explains; ``reason`` says what it is, if known."""

    event: Raise
    reason: str = ""


@dataclass
class ScoreReport:
    """Score of one run: matches (one per truth record), extras, and whether
    extras count as failures (``quiet``: a run whose truth is empty by design)."""

    scenario: str
    matches: list[Match]
    extras: list[Extra]
    quiet: bool = False

    @property
    def misses(self) -> list[Match]:
        return [m for m in self.matches if not m.detected]

    @property
    def failures(self) -> list[str]:
        """One line per failed requirement (empty: the run passes)."""
        out = [f"{m.truth.condition} cup {m.truth.label()} t_start {m.truth.t_start:.2f}: "
               f"{m.result}" + (f" latency {m.latency_s:.3f} s > allowed {m.allowed_s:.3f} s"
                                if m.detected and not m.ok else "")
               for m in self.matches if not m.ok]
        if self.quiet:
            out += [f"alarm in a quiet run: {e.event.condition} cup {_cup(e.event.cup)} "
                    f"at {e.event.t:.2f}" for e in self.extras]
        return out

    @property
    def ok(self) -> bool:
        return not self.failures

    def rows(self) -> list[list[str]]:
        """Table rows (see :data:`TABLE_HEADER`)."""
        extras = "; ".join(_extra_text(e) for e in self.extras) or "none"
        rows: list[list[str]] = []
        for m in self.matches:
            tr = m.truth
            basis = "" if tr.t_ref == tr.t_start else f" (from {tr.t_ref:.2f})"
            rows.append([
                self.scenario, tr.condition, tr.label(), f"{tr.t_start:.2f}",
                "-" if m.t_detect is None else f"{m.t_detect:.2f}",
                "-" if m.latency_s is None else f"{m.latency_s:+.2f}",
                f"{m.allowed_s:.2f}{basis}", m.result, extras if not rows else "",
            ])
        if not rows:
            verdict = ("pass (no alarm)" if not self.extras else
                       ("FAIL (alarms)" if self.quiet else "no truth"))
            rows.append([self.scenario, "-", "-", "-", "-", "-", "-", verdict, extras])
        return rows

    def table(self) -> str:
        """This run as a Markdown table."""
        return table([self])


TABLE_HEADER = ["scenario", "condition", "cup", "truth t_start (s)", "detected t (s)",
                "latency (s)", "bound (s)", "result", "extras"]


def table(reports: Iterable[ScoreReport]) -> str:
    """Several runs as one Markdown table."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |",
             "|" + "|".join("---" for _ in TABLE_HEADER) + "|"]
    for rep in reports:
        lines += ["| " + " | ".join(row) + " |" for row in rep.rows()]
    return "\n".join(lines)


def _cup(cup: int | None) -> str:
    return "device" if cup is None else str(cup)


def _extra_text(e: Extra) -> str:
    text = f"{e.event.condition} cup {_cup(e.event.cup)} at {e.event.t:.2f}"
    return f"{text} ({e.reason})" if e.reason else text


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _raises(events: Iterable[AlarmEvent | Mapping[str, Any]]) -> list[Raise]:
    out = []
    for ev in events:
        if _field(ev, "event") != "raised" or _field(ev, "condition") is None:
            continue
        out.append(Raise(float(_field(ev, "t")), _field(ev, "cup"), str(_field(ev, "condition")),
                         _field(ev, "suction_kpa")))
    return sorted(out, key=lambda r: (r.t, -1 if r.cup is None else r.cup, r.condition))


def _truths(truth: Iterable[TruthRecord | Mapping[str, Any]],
            t_ref: Sequence[float | None] | None) -> list[Truth]:
    out = []
    for i, rec in enumerate(truth):
        start = float(_field(rec, "t_start"))
        end = _field(rec, "t_end")
        ref = t_ref[i] if t_ref is not None else _field(rec, "t_ref")
        out.append(Truth(_field(rec, "cup"), str(_field(rec, "condition")), start,
                         None if end is None else float(end),
                         start if ref is None else float(ref)))
    return out


def score(events: list[AlarmEvent | dict], truth: list[TruthRecord | dict],
          bounds: dict[str, float], *, t_ref: Sequence[float | None] | None = None,
          scenario: str = "", quiet: bool = False, early_s: float = EARLY_S) -> ScoreReport:
    """Score alarm ``events`` against ``truth`` (see the module doc).

    bounds: condition -> latency allowed after the record's reference time (s).
    t_ref: per truth record (same order), the device time its bound counts from
        (None: its t_start); a dict record may carry ``"t_ref"`` instead.
    quiet: the run's truth is empty by design, so any alarm fails it.
    early_s: a raise this long before t_start still counts (as "early").

    Each raise is used once: truth records of the same cup and condition take
    the earliest unused raise in their window [t_start - early_s,
    (t_end or inf) + allowed]. Raises left over are extras; one that comes while
    an already-detected record of its cup and condition still holds is marked as
    a repeat (an alarm that cleared and came back while the condition held).
    """
    raises = _raises(events)
    recs = sorted(_truths(truth, t_ref), key=lambda r: (r.t_start, _cup(r.cup), r.condition))
    used: set[int] = set()
    found: list[int | None] = []
    windows: list[tuple[float, float, float, float]] = []  # (bound, allowed, lo, hi)
    for tr in recs:
        bound = float(bounds[tr.condition])
        allowed = (tr.t_ref - tr.t_start) + bound
        lo = tr.t_start - early_s
        hi = max((math.inf if tr.t_end is None else tr.t_end) + allowed, tr.t_start + allowed)
        windows.append((bound, allowed, lo, hi))
        hit = next((i for i, r in enumerate(raises)
                    if i not in used and lo <= r.t <= hi
                    and r.cup == tr.cup and r.condition == tr.condition), None)
        if hit is not None:
            used.add(hit)
        found.append(hit)
    matches: list[Match] = []
    for tr, hit, (bound, allowed, lo, hi) in zip(recs, found, windows, strict=True):
        if hit is not None:
            r = raises[hit]
            matches.append(Match(tr, True, r.t, r.t - tr.t_start, bound, allowed, True, True))
            continue
        # Only raises no record claimed can be a wrong-cup or wrong-name answer.
        near = _nearest(raises, used, tr, lo, hi)
        matches.append(Match(tr, False, None, None, bound, allowed,
                             near is None or near.cup == tr.cup,
                             near is None or near.condition == tr.condition, near))
    extras = []
    for i, r in enumerate(raises):
        if i in used:
            continue
        reason = ""
        for m in matches:
            tr = m.truth
            if (m.detected and tr.cup == r.cup and tr.condition == r.condition
                    and m.t_detect is not None and r.t > m.t_detect
                    and (tr.t_end is None or r.t < tr.t_end + m.allowed_s)):
                reason = "repeat while the condition held"
                break
        extras.append(Extra(r, reason))
    return ScoreReport(scenario, matches, extras, quiet)


def _nearest(raises: list[Raise], used: set[int], tr: Truth, lo: float, hi: float
             ) -> Raise | None:
    """The first unused raise in the window with the right cup or the right name."""
    for i, r in enumerate(raises):
        if i not in used and lo <= r.t <= hi and (r.cup == tr.cup) != (r.condition == tr.condition):
            return r
    return None


# ---- running a scenario through the monitor -------------------------------------------------

class _Tap:
    """A Simulation seen through a tap: everything is delegated, and the device
    status of every sample (sent or not) is watched, for the evidence times and
    for how long cups stayed on.

    Per cup (0-based): ``pump[c]`` and ``regulating[c]`` are the transitions of
    PUMP_ON and REGULATING as (device s, new state), the first sample included.
    """

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        self.pump: list[list[tuple[float, bool]]] = [[] for _ in range(sim.cups)]
        self.regulating: list[list[tuple[float, bool]]] = [[] for _ in range(sim.cups)]
        self.last_t: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sim, name)

    def advance(self, n: int) -> SimOutput:
        return self._watch(self._sim.advance(n))

    def advance_to(self, t_s: float) -> SimOutput:
        return self._watch(self._sim.advance_to(t_s))

    def _watch(self, out: SimOutput) -> SimOutput:
        n = out.time_us.shape[0]
        if not n:
            return out
        t = out.time_us * 1e-6
        st = np.asarray(out.status)
        for bit, log in ((Status.PUMP_ON, self.pump), (Status.REGULATING, self.regulating)):
            on = (st & bit) != 0
            for c, changes_ in enumerate(log):
                prev = changes_[-1][1] if changes_ else None
                col = on[:, c]
                edges = np.flatnonzero(col[1:] != col[:-1]) + 1
                if prev is None or bool(col[0]) != prev:
                    changes_.append((float(t[0]), bool(col[0])))
                changes_ += [(float(t[i]), bool(col[i])) for i in edges]
        self.last_t = float(t[-1])
        return out

    def pump_runs_from(self, cup: int, t: float) -> float | None:
        """1-based ``cup``: ``t`` if its pump runs at device time ``t``, else the
        time (s) it next starts; None if it never does."""
        state, nxt = False, None
        for when, on in self.pump[cup - 1]:
            if when <= t:
                state = on
            elif on:
                nxt = when
                break
        return t if state else nxt

    def longest_on_s(self) -> float:
        """Longest continuous REGULATING run of any cup, s (to the last sample)."""
        best = 0.0
        for changes_ in self.regulating:
            since = None
            for when, on in changes_:
                if on and since is None:
                    since = when
                elif not on and since is not None:
                    best = max(best, when - since)
                    since = None
            if since is not None and self.last_t is not None:
                best = max(best, self.last_t - since)
        return best


def evidence_times(truth: Sequence[TruthRecord], tap: _Tap, params: Mapping[str, Any]
                   ) -> list[float | None]:
    """Per truth record, the device time from which its bound counts when the
    fault cannot be seen at its t_start (None: t_start itself):

    * blockage: the first pump run at or after t_start. A cup-side sensor sees a
      blocked line (or a dead pump) only when the pump runs and the cup does
      not follow (docs/alarms.md); until then the cup holds like a healthy one.
    * sensor_fault of kind ``stuck``: t_start + the device's ``stuck_detect_s``
      (docs/simulator.md: the device flags a frozen output only after it).
    """
    out: list[float | None] = []
    for rec in truth:
        ref = None
        if rec.condition == C.BLOCKAGE and rec.cup is not None:
            ref = tap.pump_runs_from(rec.cup, rec.t_start)
        elif rec.condition == C.SENSOR_FAULT and str(params.get("fault", "")) == "stuck":
            ref = rec.t_start + float(params["stuck_detect_s"])
        out.append(ref)
    return out


@dataclass
class Capture:
    """A scenario's byte stream as the virtual device sent it, and its truth.

    data: every byte, in order. truth: the simulator's TruthRecords. t_ref:
    evidence times (see :func:`evidence_times`). longest_on_s: the longest
    continuous REGULATING run of any cup (s): the dwell check needs it.
    """

    scenario: str
    cups: int
    rate_hz: int
    seed: int
    duration_s: float
    params: dict[str, Any]
    data: bytes
    truth: list[TruthRecord]
    t_ref: list[float | None]
    longest_on_s: float


def _simulation(scenario: str, cups: int, rate_hz: int, seed: int, duration_s: float | None,
                params: Mapping[str, Any]) -> tuple[Simulation, _Tap]:
    from sim.engine import Simulation

    sim = Simulation(scenario, cups=cups, rate_hz=rate_hz, seed=seed, duration_s=duration_s,
                     **params)
    return sim, _Tap(sim)


def _run_end(sim: Simulation) -> float:
    """Device time after the last sample of the run (s)."""
    return float(sim.t0_s + sim.duration_s)


def capture(scenario: str, *, cups: int = 4, rate_hz: int = 100, seed: int = 0,
            duration_s: float | None = None, chunk_s: float = 10.0, **params: Any) -> Capture:
    """Run ``scenario`` to its end through ``sim.device.VirtualDevice`` in chunks of
    ``chunk_s`` device seconds (the bytes do not depend on the chunking)."""
    from sim.device import VirtualDevice

    sim, tap = _simulation(scenario, cups, rate_hz, seed, duration_s, params)
    dev = VirtualDevice(tap, seed=seed)  # type: ignore[arg-type]  # duck-typed Simulation
    end = _run_end(sim)
    parts = []
    t = sim.t_s
    while sim.t_s < end:
        t = min(t + chunk_s, end)
        parts.append(dev.produce_until(t))
    return Capture(scenario, sim.cups, sim.rate_hz, seed, sim.duration_s, dict(sim.params),
                   b"".join(parts), list(sim.truth), evidence_times(sim.truth, tap, sim.params),
                   tap.longest_on_s())


def _frozen_clock() -> float:
    """The pipeline's host clock: never moves, so nothing is decided by host time."""
    return 0.0


def new_pipeline(config: MonitorConfig | None = None) -> MonitorPipeline:
    """A pipeline for replay in device time: frozen host clock, fixed wall anchor."""
    return MonitorPipeline(config, clock=_frozen_clock, wall_anchor=WALL_ANCHOR)


def _deliver(pipe: MonitorPipeline, items: Iterable[object]) -> None:
    """Blocks and messages to the pipeline in stream order (as its Notifier would)."""
    for item in items:
        if isinstance(item, SampleBlock):
            pipe.on_block(item)
        else:
            pipe.on_message(item)


def monitor_bytes(data: bytes, chunk_bytes: int | None = None,
                  config: MonitorConfig | None = None) -> tuple[list[AlarmEvent], LinkStats]:
    """Decode ``data`` (cut every ``chunk_bytes``; None: in one piece) into a
    fresh pipeline; returns (its alarm events, the decoder's link statistics).
    A chunk's blocks go before its events (``DecodeResult.ordered``), as live."""
    dec = Decoder("auto")
    pipe = new_pipeline(config)
    step = len(data) if not chunk_bytes else int(chunk_bytes)
    for a in range(0, len(data), max(step, 1)):
        _deliver(pipe, dec.feed(data[a:a + step], host_time=0.0).ordered())
    pipe.stop()
    return pipe.events(), dec.stats


class _Wire:
    """SimOutput -> what the decoder would deliver, without bytes: only sent
    samples, a block split at every hole (gap_before, lost_before = samples not
    sent), suction in 0.01 kPa steps with NaN for no reading, each device EVENT
    after the samples taken at or before its time, none from a silent link."""

    def __init__(self, sim: Simulation) -> None:
        self._windows = [*sim.silent_windows, *sim.lost_windows]
        self._lost = 0  # samples not sent since the last sent one

    def items(self, out: SimOutput) -> list[SampleBlock | DeviceEvent]:
        t_us = np.asarray(out.time_us, np.int64)
        q = raw_to_kpa(kpa_to_raw(out.suction_kpa))
        st = np.asarray(out.status, np.uint8)
        send = np.asarray(out.send, bool)
        events = sorted((e for e in out.events
                         if not any(a <= e[0] / 1e6 < b for a, b in self._windows)),
                        key=lambda e: e[0])
        cuts = np.searchsorted(t_us, [int(e[0]) for e in events], side="right").tolist()
        items: list[SampleBlock | DeviceEvent] = []
        start = 0
        for k in range(len(events) + 1):
            stop = cuts[k] if k < len(events) else t_us.shape[0]
            items += self._samples(t_us, q, st, send, start, stop)
            start = max(start, stop)
            if k < len(events):
                ev_t, code, cup, value = events[k]
                items.append(DeviceEvent(int(code), int(cup), int(value), t=int(ev_t) / 1e6))
        return items

    def _samples(self, t_us: np.ndarray, q: np.ndarray, st: np.ndarray, send: np.ndarray,
                 a: int, b: int) -> list[SampleBlock]:
        if b <= a:
            return []
        idx = np.flatnonzero(send[a:b]) + a
        if not idx.size:
            self._lost += b - a
            return []
        out = []
        runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
        prev = a - 1
        for run in runs:
            lost = int(run[0] - prev - 1) + (self._lost if prev == a - 1 else 0)
            out.append(SampleBlock(t_us[run] / 1e6, q[run], st[run], 0.0, lost, lost > 0))
            prev = int(run[-1])
        self._lost = int(b - 1 - prev)
        return out


def monitor_direct(scenario: str, *, cups: int = 4, rate_hz: int = 100, seed: int = 0,
                   duration_s: float | None = None, chunk_s: float = 10.0,
                   config: MonitorConfig | None = None, **params: Any
                   ) -> tuple[list[AlarmEvent], Capture]:
    """Run ``scenario`` into a pipeline without encoding (see :class:`_Wire`):
    INFO first, then ``chunk_s`` device seconds at a time. No link corruption
    (noisy_link's transport effect). Returns (events, a Capture without bytes)."""
    sim, tap = _simulation(scenario, cups, rate_hz, seed, duration_s, params)
    pipe = new_pipeline(config)
    pipe.on_message(sim.info)
    wire = _Wire(sim)
    end = _run_end(sim)
    t = sim.t_s
    while sim.t_s < end:
        t = min(t + chunk_s, end)
        _deliver(pipe, wire.items(tap.advance_to(t)))
    pipe.stop()
    cap = Capture(scenario, sim.cups, sim.rate_hz, seed, sim.duration_s, dict(sim.params), b"",
                  list(sim.truth), evidence_times(sim.truth, tap, sim.params),
                  tap.longest_on_s())
    return pipe.events(), cap


#: Scored besides every registered scenario: other documented paths of the same
#: faults (label -> (scenario, parameters)). Rails and dropout are flagged by the
#: device at once; a sensor fault that ends; the hard limit (no delay).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "sensor_fault[rail_high]": ("sensor_fault", {"fault": "rail_high"}),
    "sensor_fault[rail_low]": ("sensor_fault", {"fault": "rail_low"}),
    "sensor_fault[dropout]": ("sensor_fault", {"fault": "dropout"}),
    "sensor_fault[stuck 10 s]": ("sensor_fault", {"fault": "stuck", "fault_duration_s": 10.0}),
    "over_suction[full speed]": ("over_suction", {"stuck_flow_fraction": 1.0}),
}

#: Scenarios whose truth is empty by design (healthy sessions, an idle test
#: rig): any alarm in them is a false alarm and fails the run.
QUIET = frozenset({"normal", "noisy_link", "pump_test"})


def score_capture(cap: Capture, events: list[AlarmEvent], label: str | None = None,
                  config: MonitorConfig | None = None) -> ScoreReport:
    """Score a run's events against its capture's truth with the default bounds."""
    rep = score(events, cap.truth, default_bounds(config, cap.rate_hz), t_ref=cap.t_ref,
                scenario=label or cap.scenario, quiet=cap.scenario in QUIET and not cap.truth)
    return rep


def run_scenario(scenario: str, *, cups: int = 4, rate_hz: int = 100, seed: int = 0,
                 duration_s: float | None = None, label: str | None = None,
                 config: MonitorConfig | None = None, **params: Any
                 ) -> tuple[ScoreReport, Capture]:
    """Capture ``scenario`` through the byte path, monitor it, score it."""
    cap = capture(scenario, cups=cups, rate_hz=rate_hz, seed=seed, duration_s=duration_s,
                  **params)
    events, _ = monitor_bytes(cap.data, REPLAY_CHUNK_BYTES, config=config)
    return score_capture(cap, events, label, config), cap
