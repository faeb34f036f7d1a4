"""One tile per cup: suction as a large number, the state by colour and word,
the target band, and time on the skin counting towards the dwell limit.

A tile never shows a stale number: when the snapshot has no live value
(``suction_kpa`` NaN: signal lost, no reading, sensor fault) it shows
"No signal" in place of the number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PySide6 import QtCore, QtGui, QtWidgets

from monitor.alarms import Alarm
from monitor.snapshot import CupView
from monitor.units import format_pressure

from .flash import Flasher
from .style import dim, severity_colors, text_color

#: Severities that colour the whole tile (alarms); the others colour the strip only.
_ALARM_SEVERITIES = frozenset({"high", "medium", "low"})
NO_SIGNAL_TEXT = "No signal"
#: Point sizes the state word may take, largest first (a narrow tile steps down).
STATE_PT = (11, 10, 9, 8)
_TILE_BG = "#263238"


def clock(seconds: float) -> str:
    """192.4 -> "3:12"; 3725 -> "1:02:05"."""
    s = int(max(0.0, seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


#: Command outcome badge colours on the tile: (background, text).
_BADGE = {"busy": ("#fbc02d", "#000000"), "ok": ("#1b5e20", "#ffffff"),
          "bad": ("#000000", "#ffeb3b")}
#: Commands a tile's context menu offers: (kind, label).
TILE_COMMANDS = (("start", "Start"), ("stop", "Stop"), ("vent", "Vent (release)"),
                 ("band", "Set band…"))


class CupTile(QtWidgets.QFrame):
    """The display of one cup; :meth:`show_view` updates it from a CupView.

    A click selects the cup for the controls (``clicked``); the context menu
    offers its commands (``commandRequested(cup, kind)``)."""

    clicked = QtCore.Signal(int)
    commandRequested = QtCore.Signal(int, str)

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
        self._selected = False
        self._commands_enabled = False
        self._style = ""

        self.header = QtWidgets.QLabel(f"Cup {cup}")
        self.header.setObjectName("tileHeader")
        self.state_label = QtWidgets.QLabel("Idle")
        self.state_label.setObjectName("tileState")
        # One line: on a narrow tile the word gets a smaller font, and only the
        # longest ones, still too long at 8 pt, are elided (full text in the tooltip).
        self.state_label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored,
                                       QtWidgets.QSizePolicy.Policy.Preferred)
        self._state_text = "Idle"
        self._state_pt = STATE_PT[0]
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
        # The outcome of the last command for this cup ("Vent: sending…",
        # "Vent: done", "Band: refused: …"), beside the time on the skin.
        self.command_label = QtWidgets.QLabel("")
        self.command_label.setObjectName("tileCommand")
        self.command_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight
                                        | QtCore.Qt.AlignmentFlag.AlignVCenter)
        # As wide as its text, but it may be cut on a narrow tile: it must not
        # widen the window (the full text is in its tooltip and the status line).
        self.command_label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Maximum,
                                         QtWidgets.QSizePolicy.Policy.Preferred)
        self.command_label.setMinimumWidth(1)
        self.command_label.hide()
        self._command_level = ""
        self._band_texts: tuple[str, ...] = ("",)
        self._time_texts: tuple[str, ...] = ("",)
        self._command_texts: tuple[str, str] = ("", "")
        times = QtWidgets.QHBoxLayout()
        times.setContentsMargins(6, 0, 6, 0)
        times.setSpacing(4)
        times.addWidget(self.time_label, 1)
        times.addWidget(self.command_label)

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 4)
        lay.setSpacing(1)
        lay.addWidget(self.strip)
        lay.addLayout(mid)
        self.band_label.setContentsMargins(6, 0, 6, 0)
        lay.addWidget(self.band_label)
        lay.addLayout(times)
        self.dwell_bar.setContentsMargins(6, 0, 6, 0)
        lay.addWidget(self.dwell_bar)
        if flasher is not None:
            flasher.toggled.connect(self._on_flash)
        self._apply_style()

    # ------------------------------------------------------------------ API
    @property
    def severity(self) -> str:
        return self._severity

    @property
    def state_text(self) -> str:
        """The state word in full (the label may show it shortened)."""
        return self._state_text

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
        self._state_text = view.state
        lo, hi = view.band
        rng = (f"{format_pressure(lo, unit, with_unit=False)}–"
               f"{format_pressure(hi, unit, with_unit=False)}")
        pct = "" if view.time_in_target_pct is None else f" · {view.time_in_target_pct:.0f}%"
        # Longest first; a narrow tile (8 per row) drops words, never the numbers.
        self._band_texts = (f"Band {rng}{pct}", f"{rng}{pct}", rng)
        self._show_times(view)
        self._refit()
        if view.severity != self._severity or flashing != self._flashing:
            self._severity, self._flashing = view.severity, flashing
            self._apply_style()
        self.setToolTip("; ".join(view.alarms) if view.alarms else "")

    def _show_times(self, view: CupView) -> None:
        if view.applied_s is None:
            self._time_texts = ("Not applied", "Off")
            self.dwell_bar.setValue(0)
            self.dwell_bar.setProperty("over", False)
            return
        on = clock(view.applied_s)
        rem = view.dwell_remaining_s
        if rem is not None:
            limit = clock(view.applied_s + rem)
            over = " – over!" if rem < 0 else ""
            self._time_texts = (f"On {on} / {limit}{over}", f"{on} / {limit}{over}",
                                f"{on}/{limit}" + ("!" if over else ""))
            total = view.applied_s + rem
            frac = view.applied_s / total if total > 0 else 1.0
            self.dwell_bar.setValue(int(1000 * min(1.0, max(0.0, frac))))
        else:
            self._time_texts = (f"On {on}", on)

    def show_command(self, text: str, level: str = "", short: str = "") -> None:
        """The outcome of the last command for this cup ("" hides it); level
        "busy", "ok" or "bad" colours the badge; ``short`` is shown instead
        when the tile is too narrow for ``text`` beside the time."""
        self._command_texts = (text, short or text)
        self.command_label.setToolTip(text)
        self.command_label.setVisible(bool(text))
        if level != self._command_level:
            self._command_level = level
            self._apply_style()
        self._refit()

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._refit()

    def _refit(self) -> None:
        """Put the longest text variants that fit the tile's width."""
        band, times, cmd = self._band_texts, self._time_texts, self._command_texts
        if not self.isVisible():      # no real width yet: the full texts
            self.band_label.setText(band[0])
            self.time_label.setText(times[0])
            self.command_label.setText(cmd[0])
            self.header.setText(f"Cup {self.cup}")
            self.state_label.setText(self._state_text)
            return
        # The band label spans the tile inside its own 6 px margins, as do the
        # header and time rows (their layouts' margins).
        row = max(1, self.band_label.contentsRect().width())
        self._fit_header(row)

        def fits(label: QtWidgets.QLabel, text: str, width: int, pad: int = 0) -> bool:
            return label.fontMetrics().horizontalAdvance(text) + pad <= width

        def pick(label: QtWidgets.QLabel, texts: tuple[str, ...], width: int) -> None:
            label.setText(next((t for t in texts if fits(label, t, width)), texts[-1]))

        pick(self.band_label, band, row)
        if cmd[0]:
            badge = self.command_label
            shortest_time = badge.fontMetrics().horizontalAdvance(times[-1])
            text = cmd[0] if fits(badge, cmd[0], row - shortest_time - 4, 8) else cmd[1]
            badge.setText(text)
            row -= badge.fontMetrics().horizontalAdvance(text) + 8 + 4
        pick(self.time_label, times, row)

    @property
    def selected(self) -> bool:
        """True when the tile is outlined as the one the controls act on."""
        return self._selected

    def set_selected(self, selected: bool) -> None:
        """Outline the tile the controls act on."""
        if selected != self._selected:
            self._selected = selected
            self._apply_style()

    def set_commands_enabled(self, enabled: bool) -> None:
        """Whether the context menu offers commands."""
        self._commands_enabled = enabled

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        if event.button() == QtCore.Qt.MouseButton.LeftButton:
            self.clicked.emit(self.cup)
        super().mousePressEvent(event)

    def contextMenuEvent(self, event: QtGui.QContextMenuEvent) -> None:
        self.clicked.emit(self.cup)
        menu = QtWidgets.QMenu(self)
        for kind, label in TILE_COMMANDS:
            act = menu.addAction(f"Cup {self.cup}: {label}")
            act.setEnabled(self._commands_enabled)
            act.triggered.connect(lambda _=False, k=kind: self.commandRequested.emit(self.cup, k))
        menu.exec(event.globalPos())

    def _fit_header(self, row: int) -> None:
        """"Cup 3" and the state word on one line: "3" if need be, then a
        smaller font for the word, then "…"."""
        state = self._state_text
        font = QtGui.QFont(self.header.font())
        space = 10   # the strip layout's spacing, and a little air

        def width(text: str, pt: int) -> int:
            font.setPointSize(pt)
            return QtGui.QFontMetrics(font).horizontalAdvance(text)

        head, pt = f"Cup {self.cup}", STATE_PT[0]
        if width(head, pt) + width(state, pt) + space > row:
            head = str(self.cup)
            for pt in STATE_PT:
                if width(head, STATE_PT[0]) + width(state, pt) + space <= row:
                    break
        self.header.setText(head)
        avail = row - width(head, STATE_PT[0]) - space
        font.setPointSize(pt)
        shown = QtGui.QFontMetrics(font).elidedText(state, QtCore.Qt.TextElideMode.ElideRight,
                                                    max(1, avail))
        self.state_label.setText(shown)
        self.state_label.setToolTip(state if shown != state else "")
        if pt != self._state_pt:
            self._state_pt = pt
            self._style = ""
            self._apply_style()

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
        border = "3px solid #ffffff" if self._selected else f"2px solid {strip_bg}"
        badge_bg, badge_fg = _BADGE.get(self._command_level, ("transparent", body_fg))
        style = (
            f"QFrame#cupTile {{ background: {bg}; border: {border}; "
            "border-radius: 4px; }"
            f"QLabel#tileCommand {{ color: {badge_fg}; background: {badge_bg}; "
            "font-size: 8pt; font-weight: bold; padding: 0px 3px; border-radius: 2px; }"
            f"QFrame#tileStrip {{ background: {strip_bg}; border: none; border-radius: 0; }}"
            f"QLabel#tileHeader, QLabel#tileState {{ color: {strip_fg}; font-weight: bold; "
            f"font-size: {STATE_PT[0]}pt; background: transparent; }}"
            f"QLabel#tileState {{ font-size: {self._state_pt}pt; }}"
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

    #: A tile was clicked (cup, 1-based).
    cupClicked = QtCore.Signal(int)
    #: A tile's context menu asked for a command (cup, kind).
    commandRequested = QtCore.Signal(int, str)

    def __init__(self, flasher: Flasher | None = None,
                 parent: QtWidgets.QWidget | None = None, per_row: int = 8) -> None:
        super().__init__(parent)
        self.flasher = flasher
        self.per_row = per_row
        self.tiles: list[CupTile] = []
        self._selected = 0
        self._commands_enabled = False
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
        for col in range(self.per_row):   # equal widths, whatever a tile's words
            self._grid.setColumnStretch(col, 1 if col < per_row else 0)
        for i, t in enumerate(self.tiles):
            self._grid.addWidget(t, i // per_row, i % per_row)
            t.clicked.connect(self.cupClicked)
            t.commandRequested.connect(self.commandRequested)
            t.set_selected(t.cup == self._selected)
            t.set_commands_enabled(self._commands_enabled)

    def tile(self, cup: int) -> CupTile | None:
        """The tile of 1-based ``cup`` (None if there is none)."""
        return self.tiles[cup - 1] if 1 <= cup <= len(self.tiles) else None

    def select(self, cup: int) -> None:
        """Outline ``cup``'s tile (0: none, i.e. all cups)."""
        self._selected = cup
        for t in self.tiles:
            t.set_selected(t.cup == cup)

    def set_commands_enabled(self, enabled: bool) -> None:
        self._commands_enabled = enabled
        for t in self.tiles:
            t.set_commands_enabled(enabled)

    def show_cups(self, views: Sequence[CupView], alarms: Sequence[Alarm] = (),
                  unit: str = "kPa") -> None:
        """Update every tile from the snapshot's cups and alarm list."""
        self.set_cups(len(views))
        flashing = _flashing_cups(alarms)
        for tile, view in zip(self.tiles, views, strict=True):
            tile.show_view(view, unit, view.cup in flashing)
