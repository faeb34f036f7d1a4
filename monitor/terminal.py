"""The terminal view's table: plain text from a :class:`MonitorSnapshot`.

Colour only repeats what the words already say (a monochrome terminal, a log
file or a screen reader lose nothing).
"""

from __future__ import annotations

import math

from firmware_bridge.messages import LinkStats

from .snapshot import MonitorSnapshot
from .units import format_pressure

_COLOUR = {"high": "\x1b[1;97;41m", "medium": "\x1b[1;30;43m", "low": "\x1b[30;46m",
           "ok": "\x1b[32m", "idle": "\x1b[37m", "nosignal": "\x1b[1;37;100m"}
_RESET = "\x1b[0m"


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--"
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    return f"{sign}{s // 60:d}:{s % 60:02d}"


def render_table(snap: MonitorSnapshot, stats: LinkStats | None, frames_per_s: float | None,
                 unit: str = "kPa", colour: bool = True) -> str:
    """The whole screen as text: header, one row per cup, alarms, link counters."""
    lines = []
    t = "--" if snap.t is None else f"{snap.t:.1f} s"
    dev = snap.device
    who = f"{dev.serial} fw {dev.firmware_str} {dev.rate_hz} Hz" if dev else "device unknown"
    link = snap.link.value if snap.link is not None else "starting"
    lines.append(f"cupmon  {who}  link: {link}  device time {t}"
                 + ("" if snap.signal_ok or snap.t is None else "   ** NO SIGNAL **"))
    lines.append(f"{'cup':>3}  {'suction':>12}  {'state':<26} {'band':>13}  {'in target':>9}"
                 f"  {'applied':>7}  {'left':>6}")
    for c in snap.cups:
        band = f"{format_pressure(c.band[0], unit, with_unit=False)}-" \
               f"{format_pressure(c.band[1], unit)}"
        pct = "--" if c.time_in_target_pct is None else f"{c.time_in_target_pct:.0f}%"
        row = (f"{c.cup:>3}  {c.suction_text(unit):>12}  {c.state:<26} {band:>13}  {pct:>9}"
               f"  {_clock(c.applied_s):>7}  {_clock(c.dwell_remaining_s):>6}")
        if colour and c.severity in _COLOUR:
            row = _COLOUR[c.severity] + row + _RESET
        lines.append(row)
    if snap.alarms:
        lines.append("")
        lines.append(f"ALARMS (highest: {snap.highest_priority})")
        for a in snap.alarms:
            row = f"  {a.priority.upper():6} {a.state:<24} {a.message}"
            lines.append(_COLOUR.get(a.priority, "") + row + _RESET if colour else row)
    else:
        lines.append("")
        lines.append("no active alarms")
    if snap.audio.paused_remaining_s:
        lines.append(f"audio paused for {snap.audio.paused_remaining_s:.0f} s")
    if stats is not None:
        fps = "--" if frames_per_s is None else f"{frames_per_s:.0f}"
        lines.append(f"link: {fps} frames/s  ok {stats.frames_ok}  CRC errors {stats.crc_errors}"
                     f"  lost {stats.frames_lost}  discarded bytes {stats.bytes_discarded}"
                     f"  reconnects {stats.reconnects}")
    return "\n".join(lines) + "\n"
