"""Colours shared by the widgets: alarm colours after IEC 60601-1-8, cup colours.

IEC 60601-1-8: high priority red, flashing 1.4-2.8 Hz; medium priority
yellow, flashing 0.4-0.8 Hz; low priority yellow or cyan, steady. The
colours and rates themselves live in :data:`monitor.snapshot.SEVERITY_STYLE`
(one table for the terminal view and the GUI); this module only derives
text colours and the dark phase of a flash from it.
"""

from __future__ import annotations

from monitor.snapshot import SEVERITY_STYLE

#: Alarm priorities, highest first (the strings the alarm manager uses).
PRIORITIES: tuple[str, ...] = ("high", "medium", "low")


def severity_colors(severity: str) -> tuple[str, str]:
    """(background, text) colours of a severity class of :data:`SEVERITY_STYLE`
    (high, medium, low, ok, idle, nosignal); unknown classes look idle."""
    bg = SEVERITY_STYLE.get(severity, SEVERITY_STYLE["idle"])[0]
    return bg, text_color(bg)


def flash_hz(severity: str) -> float:
    """Flash frequency of a severity class, Hz (0 = steady)."""
    return SEVERITY_STYLE.get(severity, ("", 0.0))[1]


def text_color(bg: str) -> str:
    """Black or white, whichever reads better on ``bg`` ("#rrggbb")."""
    r, g, b = (int(bg[i:i + 2], 16) for i in (1, 3, 5))
    # Relative luminance (sRGB weights, no gamma: good enough to pick black/white).
    return "#000000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else "#ffffff"


def dim(color: str, factor: float = 0.35) -> str:
    """``color`` darkened towards black: the "off" phase of a flashing indicator."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return "#{:02x}{:02x}{:02x}".format(*(int(v * factor) for v in (r, g, b)))


#: One colour per cup for traces (16 cups at most), distinct on a dark background.
CUP_COLORS: tuple[str, ...] = (
    "#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#4db6ac", "#f06292",
    "#90a4ae", "#aed581", "#7986cb", "#ffd54f", "#a1887f", "#64b5f6", "#dce775", "#ff8a65",
)

#: Target band shading and its limit lines on the traces. Opaque on purpose:
#: alpha blending 16 translucent bands cost ~16 ms a frame offscreen (measured),
#: an opaque fill under the curves looks the same on the black background.
BAND_FILL = (17, 46, 19)
BAND_LINE = (56, 128, 60)
#: Separator between trace rows.
ROW_LINE = (90, 90, 90)


def cup_color(cup: int) -> str:
    """Trace colour of 1-based ``cup``."""
    return CUP_COLORS[(cup - 1) % len(CUP_COLORS)]
