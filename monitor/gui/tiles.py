"""One tile per cup: suction as a large number, the state by colour and word,
the target band, and time on the skin counting towards the dwell limit.

A tile never shows a stale number: when the snapshot has no live value
(``suction_kpa`` NaN: signal lost, no reading, sensor fault) it shows
"No signal" in place of the number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PySide6 import QtCore, QtWidgets

from monitor.alarms import Alarm
from monitor.snapshot import CupView
from monitor.units import format_pressure

from .flash import Flasher
from .style import dim, severity_colors, text_color

#: Severities that colour the whole tile (alarms); the others colour the strip only.
_ALARM_SEVERITIES = frozenset({"high", "medium", "low"})
NO_SIGNAL_TEXT = "No signal"
_TILE_BG = "#263238"


def clock(seconds: float) -> str:
    """192.4 -> "3:12"; 3725 -> "1:02:05"."""
    s = int(max(0.0, seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class CupTile(QtWidgets.QFrame):
    """The display of one cup; :meth:`show_view` updates it from a CupView."""

    def __init__(self, cup: int, flasher: Flasher | None = None,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.cup = cup
        self.flasher = flasher
        self.setObjectName("cupTile")
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Preferred,
                           QtWidgets.QSizePolicy.Policy.Fixed)
        self._severity = "idle"
        self._flashing = False
        self._style = ""

        self.header = QtWidgets.QLabel(f"Cup {cup}")
        self.header.setObjectName("tileHeader")
        self.state_label = QtWidgets.QLabel("Idle")
        self.state_label.setObjectName("tileState")
        self.state_label.setWordWrap(True)  # long words wrap; never cut off
        self.state_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight
                                      | QtCore.Qt.AlignmentFlag.AlignVCenter)
        top = QtWidgets.QHBoxLayout()
        top.setContentsMargins(6, 2, 6, 2)
        top.addWidget(self.header)
        top.addWidget(self.state_label, 1)
        self.strip = QtWidgets.QFrame()
        self.strip.setObjectName("tileStrip")
        self.strip.setLayout(top)

        self.value_label = QtWidgets.QLabel("--")
        self.value_label.setObjectName("tileValue")
        self.value_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.unit_label = QtWidgets.QLabel("kPa")
        self.unit_label.setObjectName("tileUnit")
        self.unit_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignLeft
                                     | QtCore.Qt.AlignmentFlag.AlignBottom)
        mid = QtWidgets.QHBoxLayout()
        mid.setContentsMargins(6, 0, 6, 0)
        mid.addStretch(1)
        mid.addWidget(self.value_label)
        mid.addWidget(self.unit_label)
        mid.addStretch(1)

        self.band_label = QtWidgets.QLabel("")
        self.band_label.setObjectName("tileSmall")
        self.band_label.setToolTip("Target band (suction) · share of the time spent in it")
        self.time_label = QtWidgets.QLabel("")
        self.time_label.setObjectName("tileSmall")
        self.time_label.setToolTip("Time on the skin / dwell limit")
        for lab in (self.band_label, self.time_label):
            # Small print may be clipped on a narrow tile; it must not widen the window.
            lab.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored,
                              QtWidgets.QSizePolicy.Policy.Preferred)
        self.dwell_bar = QtWidgets.QProgressBar()
        self.dwell_bar.setTextVisible(False)
        self.dwell_bar.setFixedHeight(5)
        self.dwell_bar.setRange(0, 1000)

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 4)
        lay.setSpacing(1)
        lay.addWidget(self.strip)
        lay.addLayout(mid)
        for w in (self.band_label, self.time_label, self.dwell_bar):
            w.setContentsMargins(6, 0, 6, 0)
            lay.addWidget(w)
        if flasher is not None:
            flasher.toggled.connect(self._on_flash)
        self._apply_style()

    # ------------------------------------------------------------------ API
    @property
    def severity(self) -> str:
        return self._severity

    def show_view(self, view: CupView, unit: str = "kPa", flashing: bool = False) -> None:
        """Show ``view`` in ``unit``; ``flashing`` when it has an unacknowledged
        high/medium alarm (the tile then flashes with the banner)."""
        live = not math.isnan(view.suction_kpa)
        if live:
            self.value_label.setText(format_pressure(view.suction_kpa, unit, with_unit=False))
            self.unit_label.setText(unit)
            self.unit_label.show()
        else:  # never leave the last number up when the value is not live
            self.value_label.setText(NO_SIGNAL_TEXT)
            self.unit_label.hide()
        if self.value_label.property("live") != live:
            self.value_label.setProperty("live", live)
            st = self.value_label.style()  # a dynamic property needs a re-polish
            st.unpolish(self.value_label)
            st.polish(self.value_label)
        self.state_label.setText(view.state)
        lo, hi = view.band
        band = (f"Band {format_pressure(lo, unit, with_unit=False)}–"
                f"{format_pressure(hi, unit, with_unit=False)}")
        if view.time_in_target_pct is not None:
            band += f" · {view.time_in_target_pct:.0f}%"
        self.band_label.setText(band)
        self._show_times(view)
        if view.severity != self._severity or flashing != self._flashing:
            self._severity, self._flashing = view.severity, flashing
            self._apply_style()
        self.setToolTip("; ".join(view.alarms) if view.alarms else "")

    def _show_times(self, view: CupView) -> None:
        if view.applied_s is None:
            self.time_label.setText("Not applied")
            self.dwell_bar.setValue(0)
            self.dwell_bar.setProperty("over", False)
            return
        text = f"On {clock(view.applied_s)}"
        rem = view.dwell_remaining_s
        if rem is not None:
            limit = view.applied_s + rem
            text += f" / {clock(limit)}" + (" – over!" if rem < 0 else "")
            frac = view.applied_s / limit if limit > 0 else 1.0
            self.dwell_bar.setValue(int(1000 * min(1.0, max(0.0, frac))))
        self.time_label.setText(text)

    def _on_flash(self, severity: str) -> None:
        if self._flashing and severity == self._severity:
            self._apply_style()

    def background(self) -> str:
        """The tile's current background colour ("#rrggbb"), for tests and screenshots."""
        bg, _ = severity_colors(self._severity)
        if self._severity not in _ALARM_SEVERITIES:
            return _TILE_BG
        if self._flashing and self.flasher is not None and not self.flasher.is_on(self._severity):
            return dim(bg)
        return bg

    def _apply_style(self) -> None:
        bg = self.background()
        if self._severity in _ALARM_SEVERITIES:   # the whole tile takes the alarm colour
            strip_bg, strip_fg = bg, text_color(bg)
            body_fg = strip_fg
        else:                                      # a coloured strip on a dark tile
            strip_bg, strip_fg = severity_colors(self._severity)
            body_fg = "#ffffff"
        style = (
            f"QFrame#cupTile {{ background: {bg}; border: 2px solid {strip_bg}; "
            "border-radius: 4px; }"
            f"QFrame#tileStrip {{ background: {strip_bg}; border: none; border-radius: 0; }}"
            f"QLabel#tileHeader, QLabel#tileState {{ color: {strip_fg}; font-weight: bold; "
            "font-size: 11pt; background: transparent; }"
            f"QLabel#tileValue {{ color: {body_fg}; font-size: 26pt; font-weight: bold; "
            "background: transparent; }"
            'QLabel#tileValue[live="false"] { font-size: 17pt; }'
            f"QLabel#tileUnit, QLabel#tileSmall {{ color: {body_fg}; font-size: 8pt; "
            "background: transparent; }"
            "QProgressBar { background: #455a64; border: none; }"
            "QProgressBar::chunk { background: #b0bec5; }"
        )
        if style != self._style:
            self._style = style
            self.setStyleSheet(style)


def _flashing_cups(alarms: Sequence[Alarm]) -> set[int]:
    """Cups with an unacknowledged high or medium alarm."""
    return {a.cup for a in alarms
            if a.cup is not None and not a.acknowledged and a.priority in ("high", "medium")}


class TileGrid(QtWidgets.QWidget):
    """All cup tiles, up to 8 per row (16 cups fit 1366 px in two rows)."""

    def __init__(self, flasher: Flasher | None = None,
                 parent: QtWidgets.QWidget | None = None, per_row: int = 8) -> None:
        super().__init__(parent)
        self.flasher = flasher
        self.per_row = per_row
        self.tiles: list[CupTile] = []
        self._grid = QtWidgets.QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(4)

    def set_cups(self, cups: int) -> None:
        if cups == len(self.tiles):
            return
        for t in self.tiles:
            self._grid.removeWidget(t)
            t.deleteLater()
        self.tiles = [CupTile(c + 1, self.flasher, self) for c in range(cups)]
        per_row = min(self.per_row, max(1, cups))
        for i, t in enumerate(self.tiles):
            self._grid.addWidget(t, i // per_row, i % per_row)

    def show_cups(self, views: Sequence[CupView], alarms: Sequence[Alarm] = (),
                  unit: str = "kPa") -> None:
        """Update every tile from the snapshot's cups and alarm list."""
        self.set_cups(len(views))
        flashing = _flashing_cups(alarms)
        for tile, view in zip(self.tiles, views, strict=True):
            tile.show_view(view, unit, view.cup in flashing)
