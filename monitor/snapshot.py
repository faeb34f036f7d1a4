"""What a display needs at one instant: plain frozen data, no Qt, cheap to copy.

:meth:`monitor.pipeline.MonitorPipeline.snapshot` builds a :class:`MonitorSnapshot`;
the terminal view and the GUI only read it. Severity classes map to the
IEC 60601-1-8 visual conventions in :data:`SEVERITY_STYLE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from firmware_bridge.messages import DeviceInfo, LinkState

from .alarms import Alarm, AudioState
from .units import format_pressure

#: Severity class -> (colour, flash rate Hz; 0 = steady). IEC 60601-1-8: high red
#: flashing 1.4-2.8 Hz, medium yellow flashing 0.4-0.8 Hz, low cyan steady.
SEVERITY_STYLE: dict[str, tuple[str, float]] = {
    "high": ("#d32f2f", 2.0),
    "medium": ("#fbc02d", 0.6),
    "low": ("#26c6da", 0.0),
    "ok": ("#43a047", 0.0),
    "idle": ("#9e9e9e", 0.0),
    "nosignal": ("#616161", 0.0),
}


@dataclass(frozen=True, slots=True)
class CupView:
    """One cup now.

    suction_kpa: latest reading, NaN when there is no live value (signal lost,
        stale, no reading). state: a word for the therapist ("OK", "Pumping down",
        "Over suction", "No signal", "Released", "Idle", ...). severity: a key of
        SEVERITY_STYLE. band: (low, high) kPa. time_in_target_pct: % of checked
        time in band (None before any). applied_s: how long the cup has been on
        (None when off). dwell_remaining_s: time left to the dwell limit (negative
        once past it; None when off). alarms: conditions listed for this cup.
    """

    cup: int
    suction_kpa: float
    state: str
    severity: str
    band: tuple[float, float]
    time_in_target_pct: float | None
    applied_s: float | None
    dwell_remaining_s: float | None
    alarms: tuple[str, ...]
    pump_on: bool
    valve_open: bool
    regulating: bool
    enabled: bool

    def suction_text(self, unit: str = "kPa") -> str:
        """The reading for display ("22.4 kPa", "--" when not live)."""
        return format_pressure(None if math.isnan(self.suction_kpa) else self.suction_kpa, unit)


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    """The whole monitor now.

    t: last device time (s) seen, None before data. alarms: listed alarms,
    highest priority first. highest_priority: what the display shows ("high",
    "medium", "low" or None). audio: what the sound should do. signal_ok:
    data is live. link: last link state (None if the source never said).
    status_bits: the device sends pump/valve status (False: text format).
    events: number of alarm events so far (for ``pipeline.events(since)``).
    """

    t: float | None
    cups: tuple[CupView, ...]
    alarms: tuple[Alarm, ...]
    highest_priority: str | None
    audio: AudioState
    signal_ok: bool
    link: LinkState | None
    device: DeviceInfo | None
    status_bits: bool
    unit: str
    events: int

    @property
    def severity(self) -> str:
        """Severity class of the whole display."""
        if self.highest_priority:
            return self.highest_priority
        return "ok" if self.signal_ok else "nosignal"
