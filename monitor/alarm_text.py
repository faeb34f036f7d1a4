"""Sentences a therapist reads: one per alarm change, in the display unit.

Kept apart from the alarm logic so wording can change (or be translated)
without touching the rules. Pressures arrive in kPa; ``cfg`` is the cup's
:class:`~monitor.config.CupConfig`.
"""

from __future__ import annotations

from firmware_bridge import conditions as C

from .config import CupConfig
from .units import format_pressure

#: Short names used inside sentences ("the over-suction alarm").
LABELS: dict[str, str] = {
    C.OVER_SUCTION: "over-suction",
    C.UNDER_SUCTION: "under-suction",
    C.DETACHED: "detached-cup",
    C.LEAK: "leak",
    C.BLOCKAGE: "blockage",
    C.SIGNAL_LOSS: "signal-loss",
    C.SENSOR_FAULT: "sensor-fault",
    C.INTERLOCK: "safety-release",
    C.DWELL_EXCEEDED: "time-on",
}


def duration(seconds: float) -> str:
    """600 -> "10 min", 90 -> "1.5 min", 45 -> "45 s"."""
    if seconds < 60:
        return f"{seconds:g} s"
    m = seconds / 60
    return f"{m:.0f} min" if abs(m - round(m)) < 1e-9 else f"{m:.1f} min"


def _who(cup: int | None) -> str:
    return "The device" if cup is None else f"Cup {cup}"


def raised(condition: str, cup: int | None, suction: float | None, cfg: CupConfig, unit: str,
           level: int = 1, signal_loss_s: float = 0.25) -> str:
    """The sentence for a condition that has just become an alarm."""
    def p(kpa: float | None) -> str:
        return format_pressure(kpa, unit)

    who = _who(cup)
    if condition == C.OVER_SUCTION:
        if suction is not None and suction >= cfg.hard_limit_kpa:
            return (f"{who}: suction {p(suction)} is above the {p(cfg.hard_limit_kpa)} safety "
                    "limit – release the cup now.")
        return (f"{who}: suction {p(suction)} is above the {p(cfg.band_high_kpa)} limit – "
                "reduce suction or release the cup.")
    if condition == C.UNDER_SUCTION:
        return (f"{who}: suction {p(suction)} is below the {p(cfg.band_low_kpa)} target – "
                "check the cup's seal and the pump.")
    if condition == C.DETACHED:
        return f"{who} has lost its seal (suction {p(suction)}) – re-seat the cup or stop it."
    if condition == C.LEAK:
        return (f"{who} is leaking: the pump keeps working to hold suction ({p(suction)}) – "
                "press the rim down or re-seat the cup.")
    if condition == C.BLOCKAGE:
        return (f"{who}: the pump runs but the cup's suction does not follow ({p(suction)}) – "
                "check the hose for a kink or blockage.")
    if condition == C.SIGNAL_LOSS:
        return (f"No data from the device for more than {duration(signal_loss_s)} – the values "
                "shown are not live; check the cable and the device.")
    if condition == C.SENSOR_FAULT:
        return (f"{who}: the pressure sensor gives no valid reading – do not rely on this "
                "cup's value; check the sensor.")
    if condition == C.INTERLOCK:
        at = f" at {p(suction)}" if suction is not None else ""
        return (f"{who} was released by the device's safety limit{at} – check the skin "
                "before restarting the cup.")
    if condition == C.DWELL_EXCEEDED:
        if level >= 2:
            return (f"{who} has been on for {duration(cfg.dwell_limit_s)}, the longest "
                    "recommended time – release the cup now to avoid blisters.")
        return (f"{who} has been on for {duration(cfg.dwell_advisory_s)} – plan to release it "
                f"(limit {duration(cfg.dwell_limit_s)}).")
    return f"{who}: {condition}."


def cleared(condition: str, cup: int | None, suction: float | None, unit: str,
            awaiting_ack: bool) -> str:
    """The sentence for a condition that has ended (``awaiting_ack``: latched alarm)."""
    tail = " – resolved, acknowledge the alarm." if awaiting_ack else "."
    if condition == C.SIGNAL_LOSS:
        return "Data from the device is live again" + tail
    if condition == C.DWELL_EXCEEDED:
        return f"{_who(cup)} has been released" + tail
    value = f" (suction {format_pressure(suction, unit)})" if suction is not None else ""
    return f"{_who(cup)}: {LABELS.get(condition, condition)} condition ended{value}" + tail


def acknowledged(condition: str, cup: int | None, still_active: bool) -> str:
    """The sentence for an acknowledgement."""
    what = f"{LABELS.get(condition, condition)} alarm"
    if cup is not None:
        what = f"Cup {cup}: {what}"
    else:
        what = what[0].upper() + what[1:]
    return f"{what} acknowledged" + (" (condition still present)." if still_active else ".")


def audio_paused(seconds: float, count: int) -> str:
    n = "1 alarm" if count == 1 else f"{count} alarms"
    return f"Alarm sound paused for {duration(seconds)} ({n} silenced)."


def resound(condition: str, cup: int | None) -> str:
    return (f"{_who(cup)}: the {LABELS.get(condition, condition)} alarm is still present – "
            "it sounds again after the audio pause.")
