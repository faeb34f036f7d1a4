"""Alarm management in the IEC 60601-1-8 manner: priorities, latching,
acknowledgement and timed audio pause. Every change is an :class:`AlarmEvent`.

Priorities (domain.md, IEC 60601-1-8: high = immediate response, medium =
prompt, low = awareness): high for over_suction, signal_loss, sensor_fault and
interlock; medium for under_suction, detached, leak and blockage;
dwell_exceeded is low at its first step and medium at its second.

High-priority alarms latch: when the cause ends they stay listed as "resolved
– acknowledge" and keep sounding until acknowledged. Medium and low alarms
clear by themselves. Acknowledging an alarm whose cause is still present
silences it (it stays listed until the cause ends). ``pause_audio`` silences
the alarms present now for a time; a new alarm during the pause sounds at
once (inference: a pause must not hide a new hazard), and when the pause
ends every alarm still present sounds again with a "raised" event saying so.

The monitor plays nothing itself: :meth:`AlarmManager.audio` says which
priority pattern should sound now (IEC 60601-1-8 bursts: high 2x5 pulses,
medium 3 pulses, low 1 pulse) or until when audio is paused.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from firmware_bridge import conditions as C

from . import alarm_text
from .checker import Detection
from .config import MonitorConfig

HIGH, MEDIUM, LOW = "high", "medium", "low"
#: Rank of a priority, for "highest wins".
RANK: dict[str, int] = {HIGH: 3, MEDIUM: 2, LOW: 1}
_PRIORITY: dict[str, str] = {
    C.OVER_SUCTION: HIGH, C.SIGNAL_LOSS: HIGH, C.SENSOR_FAULT: HIGH, C.INTERLOCK: HIGH,
    C.UNDER_SUCTION: MEDIUM, C.DETACHED: MEDIUM, C.LEAK: MEDIUM, C.BLOCKAGE: MEDIUM,
}
EVENT_KINDS = ("raised", "cleared", "acknowledged", "audio_paused")


def priority_of(condition: str, level: int = 1) -> str:
    """Priority of a condition; dwell_exceeded: low at step 1, medium at step 2."""
    if condition == C.DWELL_EXCEEDED:
        return MEDIUM if level >= 2 else LOW
    return _PRIORITY[condition]


def wall_now() -> str:
    """Local wall-clock time, ISO 8601 with milliseconds and UTC offset."""
    return _dt.datetime.now().astimezone().isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One change of alarm state.

    t: device time (s). wall: ISO 8601 wall-clock time with ms and offset.
    cup: 1-based, None for device-wide events. event: raised | cleared |
    acknowledged | audio_paused. condition: a name from
    firmware_bridge.conditions (None for audio_paused). suction_kpa: reading
    that decided it, kPa, or None. message: one sentence for the therapist.
    """

    t: float
    wall: str
    cup: int | None
    event: str
    condition: str | None
    priority: str
    suction_kpa: float | None
    message: str

    def to_dict(self) -> dict:
        """JSON-serialisable dict with exactly the public keys (t rounded to ms)."""
        return {"t": round(self.t, 3), "wall": self.wall, "cup": self.cup, "event": self.event,
                "condition": self.condition, "priority": self.priority,
                "suction_kpa": None if self.suction_kpa is None else round(self.suction_kpa, 2),
                "message": self.message}


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm on the list: its cause is present (``active``) or it is latched
    awaiting acknowledgement."""

    cup: int | None
    condition: str
    priority: str
    raised_t: float          # device s
    active: bool             # cause still present
    acknowledged: bool
    suction_kpa: float | None
    message: str
    level: int = 1

    @property
    def latching(self) -> bool:
        return self.priority == HIGH

    @property
    def state(self) -> str:
        """'active', 'acknowledged' or 'resolved – acknowledge' (latched, cause gone)."""
        if not self.active:
            return "resolved – acknowledge"
        return "acknowledged" if self.acknowledged else "active"


@dataclass(frozen=True, slots=True)
class AudioState:
    """What the alarm sound should do now.

    pattern: priority whose burst pattern should play ("high"/"medium"/"low"),
        None for silence. paused_until: device time (s) the audio pause ends,
        None when not paused. paused_remaining_s: seconds left of the pause.
    silenced: alarms muted by the pause or acknowledged (not sounding).
    """

    pattern: str | None
    paused_until: float | None
    paused_remaining_s: float | None
    silenced: int


Key = tuple[int | None, str]


class AlarmManager:
    """Turns :class:`Detection` s into alarms and events. Not thread-safe on its own
    (the pipeline serialises calls)."""

    def __init__(self, config: MonitorConfig, wall: Callable[[float], str] | None = None) -> None:
        self.config = config
        self.wall = wall or (lambda t: wall_now())
        self._alarms: dict[Key, Alarm] = {}
        self._paused_until: float | None = None
        self._muted: set[Key] = set()

    # ---- inputs ---------------------------------------------------------------
    def feed(self, detections: Iterable[Detection]) -> list[AlarmEvent]:
        """Apply detections (in time order); return the events they cause."""
        out: list[AlarmEvent] = []
        for d in detections:
            out.extend(self.tick(d.t))
            out.extend(self._apply(d))
        return out

    def _event(self, t: float, cup: int | None, kind: str, condition: str | None, priority: str,
               suction: float | None, message: str) -> AlarmEvent:
        return AlarmEvent(float(t), self.wall(t), cup, kind, condition, priority, suction, message)

    def _apply(self, d: Detection) -> list[AlarmEvent]:
        key = (d.cup, d.condition)
        old = self._alarms.get(key)
        cfg = self.config.cup(d.cup) if d.cup is not None else self.config.defaults
        unit = self.config.unit
        if d.active:
            prio = priority_of(d.condition, d.level)
            if old is not None and old.active and old.level == d.level:
                return []  # already raised (e.g. device event then status bit)
            msg = alarm_text.raised(d.condition, d.cup, d.suction_kpa, cfg, unit, d.level,
                                    self.config.signal_loss_s)
            self._alarms[key] = Alarm(d.cup, d.condition, prio, d.t, True, False, d.suction_kpa,
                                      msg, d.level)
            self._muted.discard(key)
            return [self._event(d.t, d.cup, "raised", d.condition, prio, d.suction_kpa, msg)]
        if old is None or not old.active:
            return []
        awaiting = old.latching and not old.acknowledged
        msg = alarm_text.cleared(d.condition, d.cup, d.suction_kpa, unit, awaiting)
        if awaiting:
            self._alarms[key] = replace(old, active=False, message=msg)
        else:
            del self._alarms[key]
            self._muted.discard(key)
        return [self._event(d.t, d.cup, "cleared", d.condition, old.priority, d.suction_kpa, msg)]

    def acknowledge(self, t: float, cup: int | None = None,
                    condition: str | None = None) -> list[AlarmEvent]:
        """Acknowledge alarms of ``cup`` and/or ``condition`` (None: any) at device time t.
        Latched alarms whose cause has gone are removed; present ones are silenced."""
        out = []
        for key, a in sorted(self._alarms.items(), key=lambda kv: self._order(kv[1])):
            if (cup is not None and a.cup != cup) or (condition is not None and a.condition != condition):
                continue
            if a.acknowledged:
                continue
            msg = alarm_text.acknowledged(a.condition, a.cup, a.active)
            if a.active:
                self._alarms[key] = replace(a, acknowledged=True)
            else:
                del self._alarms[key]
            self._muted.discard(key)
            out.append(self._event(t, a.cup, "acknowledged", a.condition, a.priority,
                                   a.suction_kpa, msg))
        return out

    def pause_audio(self, t: float, seconds: float | None = None) -> list[AlarmEvent]:
        """Silence the alarms present now for ``seconds`` (default config.audio_pause_s)."""
        seconds = self.config.audio_pause_s if seconds is None else float(seconds)
        if seconds <= 0:
            raise ValueError("audio pause must be positive")
        sounding = [k for k, a in self._alarms.items() if not a.acknowledged]
        self._muted |= set(sounding)
        self._paused_until = t + seconds
        prios = [self._alarms[k].priority for k in sounding]
        prio = max(prios, key=RANK.__getitem__) if prios else LOW
        return [self._event(t, None, "audio_paused", None, prio, None,
                            alarm_text.audio_paused(seconds, len(sounding)))]

    def tick(self, t: float) -> list[AlarmEvent]:
        """Advance to device time t (s): end an audio pause that has run out."""
        if self._paused_until is None or t < self._paused_until:
            return []
        until, self._paused_until = self._paused_until, None
        out = []
        for key, a in sorted(self._alarms.items(), key=lambda kv: self._order(kv[1])):
            if key in self._muted and not a.acknowledged:
                out.append(self._event(until, a.cup, "raised", a.condition, a.priority,
                                       a.suction_kpa, alarm_text.resound(a.condition, a.cup)))
        self._muted.clear()
        return out

    # ---- views ----------------------------------------------------------------
    @staticmethod
    def _order(a: Alarm) -> tuple:
        return (-RANK[a.priority], not a.active, a.raised_t, -1 if a.cup is None else a.cup,
                C.CONDITIONS.index(a.condition))

    def alarms(self) -> list[Alarm]:
        """Listed alarms, highest priority first, then present before resolved, oldest first."""
        return sorted(self._alarms.values(), key=self._order)

    def for_cup(self, cup: int | None) -> list[Alarm]:
        return [a for a in self.alarms() if a.cup == cup]

    @property
    def highest_priority(self) -> str | None:
        """Priority the display shows (IEC 60601-1-8: the highest listed), or None."""
        return max((a.priority for a in self._alarms.values()), key=RANK.__getitem__, default=None)

    def audio(self, t: float | None = None) -> AudioState:
        """Which burst pattern to play now (device time t, s, for the pause countdown)."""
        sounding = [a for k, a in self._alarms.items() if not a.acknowledged and k not in self._muted]
        pattern = max((a.priority for a in sounding), key=RANK.__getitem__, default=None)
        until = self._paused_until
        remaining = None if until is None or t is None else max(0.0, until - t)
        return AudioState(pattern, until, remaining, len(self._alarms) - len(sounding))
