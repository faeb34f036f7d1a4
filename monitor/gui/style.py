"""Colours shared by the widgets: alarm colours after IEC 60601-1-8, cup colours.

IEC 60601-1-8 (table 2): high priority red, flashing 1.4-2.8 Hz; medium
priority yellow, flashing 0.4-0.8 Hz; low priority yellow or cyan, steady.
"""

from __future__ import annotations

#: Alarm priorities, highest first (the strings MonitorPipeline uses).
PRIORITIES: tuple[str, ...] = ("high", "medium", "low")

#: Background colour per severity class ("ok" and "info" are not alarms).
SEVERITY_BG: dict[str, str] = {
    "high": "#d0021b",     # red
    "medium": "#f5c400",   # yellow
    "low": "#00b7c7",      # cyan (IEC allows yellow or cyan; cyan keeps it apart from medium)
    "ok": "#1e7d32",       # green: in target band
    "info": "#455a64",     # neutral: idle, released, pumping down
    "none": "#37474f",     # no signal: grey, the value is hidden
}
#: Text colour readable on each background.
SEVERITY_FG: dict[str, str] = {
    "high": "#ffffff", "medium": "#000000", "low": "#000000",
    "ok": "#ffffff", "info": "#ffffff", "none": "#ffffff",
}
#: Flash frequency per priority, Hz (0 = steady). Mid-range of the IEC limits.
FLASH_HZ: dict[str, float] = {"high": 2.0, "medium": 0.6, "low": 0.0}

#: One colour per cup for traces (16 cups at most), distinct on a dark background.
CUP_COLORS: tuple[str, ...] = (
    "#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#4db6ac", "#f06292",
    "#90a4ae", "#aed581", "#7986cb", "#ffd54f", "#a1887f", "#64b5f6", "#dce775", "#ff8a65",
)

#: Target band shading and its limit lines on the traces.
BAND_FILL = (76, 175, 80, 45)
BAND_LINE = (76, 175, 80, 160)


def cup_color(cup: int) -> str:
    """Trace colour of 1-based ``cup``."""
    return CUP_COLORS[(cup - 1) % len(CUP_COLORS)]
