"""Suction traces of every cup, drawn from a :class:`DisplayBuffer` on a timer.

Each frame asks the buffer for a min/max envelope at the plot's pixel width
(``DisplayBuffer.view``) and draws it as one curve per cup: the lo/hi pair of
each column interleaved, so the curve runs up and down the column's range
and a one-sample spike still shows. ``connect='finite'`` breaks the curve at
the NaN rows the buffer puts at gaps, so missing data is never bridged.

Why not pyqtgraph's own downsampling: that decimates the full arrays on the
GUI thread every frame (16 x 30,000 points ran at ~33 fps here); the buffer's
pyramid gives the same envelope in ~2 ms whatever the window.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from firmware_bridge.conditions import BAND_HIGH_KPA, BAND_LOW_KPA, HARD_LIMIT_KPA
from monitor.display_buffer import DisplayBuffer
from monitor.units import PER_KPA, normalize_unit

from .style import BAND_FILL, BAND_LINE, cup_color

#: Windows the therapist can choose, s (10 s - 10 min).
WINDOWS_S: tuple[float, ...] = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
MIN_WINDOW_S, MAX_WINDOW_S = 10.0, 600.0
MAX_FPS = 60.0


@dataclass(slots=True)
class FrameStats:
    """Counters of the redraw timer (for the benchmark and the device panel)."""

    drawn: int = 0
    skipped: int = 0
    last_ms: float = 0.0
    max_ms: float = 0.0


def _window_label(s: float) -> str:
    return f"{s:.0f} s" if s < 60 else f"{s / 60:.0f} min"


class TracePanel(QtWidgets.QWidget):
    """Trace plots: one row per cup or all cups in one plot; live or paused.

    Live: the x range follows the newest sample, ``window_s`` wide. Dragging
    or wheel-zooming the time axis pauses the panel on that range while
    acquisition goes on; :meth:`go_live` (the "Live" button) returns to the
    present. Never touch it from a non-GUI thread.
    """

    #: Emitted with True when the panel follows live data, False when paused.
    liveChanged = QtCore.Signal(bool)

    def __init__(self, buffer: DisplayBuffer, parent: QtWidgets.QWidget | None = None, *,
                 window_s: float = 30.0, fps: float = 30.0, mode: str = "rows") -> None:
        super().__init__(parent)
        self.buffer = buffer
        self.stats = FrameStats()
        self._window_s = float(np.clip(window_s, MIN_WINDOW_S, MAX_WINDOW_S))
        self._mode = mode
        self._unit = "kPa"
        self._bands: list[tuple[float, float]] = []
        self._cups = 0
        self._live = True
        self._paused_range: tuple[float, float] | None = None
        self._last_key: tuple | None = None
        self._plots: list[pg.PlotItem] = []
        self._curves: list[pg.PlotCurveItem] = []
        self._band_items: list[tuple[pg.PlotItem, pg.GraphicsObject]] = []

        self._build_controls()
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setAntialiasing(False)  # 1 px lines without AA are the fast path
        self.graphics.ci.setSpacing(0)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(self._controls)
        lay.addWidget(self.graphics, 1)

        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.redraw)
        self.set_fps(fps)

    # ------------------------------------------------------------- controls
    def _build_controls(self) -> None:
        self._controls = QtWidgets.QHBoxLayout()
        self.window_box = QtWidgets.QComboBox()
        self.window_box.setToolTip("Time window of the traces")
        for s in WINDOWS_S:
            self.window_box.addItem(_window_label(s), s)
        self.window_box.currentIndexChanged.connect(
            lambda i: self.set_window(float(self.window_box.itemData(i))))
        self.mode_box = QtWidgets.QComboBox()
        self.mode_box.addItem("One row per cup", "rows")
        self.mode_box.addItem("All cups in one plot", "overlay")
        self.mode_box.currentIndexChanged.connect(
            lambda i: self.set_mode(str(self.mode_box.itemData(i))))
        self.live_button = QtWidgets.QPushButton("Pause")
        self.live_button.setToolTip("Pause the traces (acquisition and alarms go on); "
                                    "Live returns to the present  [Space]")
        self.live_button.clicked.connect(self._toggle_live)
        self.status_label = QtWidgets.QLabel("")
        self._controls.addWidget(QtWidgets.QLabel("Window"))
        self._controls.addWidget(self.window_box)
        self._controls.addWidget(self.mode_box)
        self._controls.addWidget(self.live_button)
        self._controls.addWidget(self.status_label, 1)
        self._sync_controls()

    def _sync_controls(self) -> None:
        for box, value in ((self.window_box, self._window_s), (self.mode_box, self._mode)):
            i = box.findData(value)
            if i >= 0 and i != box.currentIndex():
                box.blockSignals(True)
                box.setCurrentIndex(i)
                box.blockSignals(False)
        self.live_button.setText("Pause" if self._live else "Live")
        self.status_label.setText("" if self._live else "Paused: acquisition continues")

    def _toggle_live(self) -> None:
        if self._live:
            self.pause()
        else:
            self.go_live()

    # ------------------------------------------------------------ settings
    @property
    def window_s(self) -> float:
        return self._window_s

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def is_live(self) -> bool:
        return self._live

    @property
    def plots(self) -> list[pg.PlotItem]:
        return list(self._plots)

    @property
    def curves(self) -> list[pg.PlotCurveItem]:
        """One curve per cup (index 0 = cup 1)."""
        return list(self._curves)

    def add_control(self, widget: QtWidgets.QWidget) -> None:
        """Put ``widget`` at the end of the trace controls row."""
        self._controls.addWidget(widget)

    def set_buffer(self, buffer: DisplayBuffer) -> None:
        """Draw from another buffer (a new connection); goes live."""
        self.buffer = buffer
        self._rebuild(0)
        self.go_live()

    def set_fps(self, fps: float) -> None:
        """Redraw rate, Hz (at most 60)."""
        fps = float(np.clip(fps, 1.0, MAX_FPS))
        self.timer.setInterval(int(round(1000.0 / fps)))

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def set_window(self, seconds: float) -> None:
        """Window width, s (clamped to 10 s - 10 min). Paused: zooms about the centre."""
        self._window_s = float(np.clip(seconds, MIN_WINDOW_S, MAX_WINDOW_S))
        if not self._live and self._paused_range is not None:
            mid = 0.5 * sum(self._paused_range)
            self._set_paused(mid - self._window_s / 2, mid + self._window_s / 2)
        self._sync_controls()
        self._last_key = None

    def set_mode(self, mode: str) -> None:
        """"rows" (one plot per cup) or "overlay" (all cups in one plot)."""
        if mode not in ("rows", "overlay"):
            raise ValueError(f"unknown trace mode {mode!r}")
        if mode != self._mode:
            self._mode = mode
            self._rebuild(self._cups)
        self._sync_controls()

    def set_unit(self, unit: str) -> None:
        """Display unit of the y axes (kPa, mmHg, inHg, cmH2O)."""
        self._unit = normalize_unit(unit)
        self._rebuild(self._cups)

    def set_bands(self, bands: Sequence[tuple[float, float]]) -> None:
        """Target band (low, high) suction in kPa per cup (index 0 = cup 1)."""
        new = [(float(a), float(b)) for a, b in bands]
        if new != self._bands:
            self._bands = new
            self._update_bands()

    def band(self, cup: int) -> tuple[float, float]:
        if 1 <= cup <= len(self._bands):
            return self._bands[cup - 1]
        return (BAND_LOW_KPA, BAND_HIGH_KPA)

    # --------------------------------------------------------- live / pause
    def pause(self) -> None:
        """Freeze the x range where it is (acquisition goes on)."""
        if self._live:
            r = self._current_range()
            self._live = False
            if r is not None:
                self._paused_range = r
            self._sync_controls()
            self.liveChanged.emit(False)

    def go_live(self) -> None:
        """Follow the newest data again with the chosen window."""
        if not self._live:
            self._live = True
            self._paused_range = None
            self._last_key = None
            self._sync_controls()
            self.liveChanged.emit(True)

    def scroll_to(self, t_end: float, window_s: float | None = None) -> None:
        """Show the past window ending at device time ``t_end`` (s); pauses."""
        w = self._window_s if window_s is None else float(window_s)
        self._live = False
        self._set_paused(t_end - w, t_end)
        self._sync_controls()
        self.liveChanged.emit(False)

    def _set_paused(self, t0: float, t1: float) -> None:
        self._paused_range = (t0, t1)
        self._last_key = None

    def _current_range(self) -> tuple[float, float] | None:
        if self._plots:
            x0, x1 = self._plots[0].getViewBox().viewRange()[0]
            return float(x0), float(x1)
        return None

    def _on_manual_range(self, *_: object) -> None:
        # The user dragged or wheel-zoomed: stop following, keep their range.
        r = self._current_range()
        if r is None:
            return
        was_live = self._live
        self._live = False
        self._paused_range = r
        self._last_key = None
        if was_live:
            self._sync_controls()
            self.liveChanged.emit(False)

    # -------------------------------------------------------------- plots
    def _rebuild(self, cups: int) -> None:
        self.graphics.clear()
        self._plots, self._curves, self._band_items = [], [], []
        self._cups = cups
        self._last_key = None
        if cups <= 0:
            return
        n_plots = cups if self._mode == "rows" else 1
        for i in range(n_plots):
            p: pg.PlotItem = self.graphics.addPlot(row=i, col=0)
            p.setMenuEnabled(False)
            p.hideButtons()
            p.setClipToView(False)  # the buffer already clips to the window
            vb = p.getViewBox()
            vb.setMouseEnabled(x=True, y=False)
            vb.disableAutoRange()  # ranges are set per frame; no bounds scans
            vb.sigRangeChangedManually.connect(self._on_manual_range)
            p.showGrid(x=True, y=True, alpha=0.15)
            if self._mode == "overlay":
                label = f"Suction ({self._unit})"
            else:  # rows get thin with many cups: a bare number stays legible
                label = f"Cup {i + 1}" if cups <= 8 else f"{i + 1}"
            p.setLabel("left", label)
            p.getAxis("left").setWidth(52)
            if i < n_plots - 1:
                p.getAxis("bottom").setStyle(showValues=False)
            else:
                p.setLabel("bottom", "device time (s)")
            if i > 0:
                p.setXLink(self._plots[0])
            self._plots.append(p)
        for c in range(cups):
            plot = self._plots[c if self._mode == "rows" else 0]
            curve = pg.PlotCurveItem(pen=pg.mkPen(cup_color(c + 1), width=1),
                                     connect="finite", skipFiniteCheck=True, antialias=False)
            plot.addItem(curve)
            self._curves.append(curve)
        if self._mode == "overlay":
            legend = self._plots[0].addLegend(offset=(-10, 5), colCount=min(cups, 8))
            for c, curve in enumerate(self._curves):
                legend.addItem(curve, f"{c + 1}")
        self._update_bands()

    def _update_bands(self) -> None:
        factor = PER_KPA[self._unit]
        for plot, item in self._band_items:
            plot.removeItem(item)
        self._band_items = []
        if not self._plots:
            return
        y_top = max(HARD_LIMIT_KPA + 5.0, 1.3 * max((b[1] for b in self._bands), default=0.0))
        for p in self._plots:
            p.getViewBox().setYRange(-1.0 * factor, y_top * factor, padding=0)
        if self._mode == "rows":
            targets = [(self._plots[c], self.band(c + 1)) for c in range(self._cups)]
        else:  # one shaded band per distinct target
            distinct = sorted({self.band(c + 1) for c in range(self._cups)})
            targets = [(self._plots[0], b) for b in distinct]
        for plot, (lo, hi) in targets:
            region = pg.LinearRegionItem(values=(lo * factor, hi * factor),
                                         orientation="horizontal", movable=False,
                                         brush=pg.mkBrush(*BAND_FILL),
                                         pen=pg.mkPen(BAND_LINE, width=1))
            region.setZValue(-10)
            plot.addItem(region, ignoreBounds=True)
            self._band_items.append((plot, region))

    # ------------------------------------------------------------- redraw
    def target_range(self) -> tuple[float, float] | None:
        """The x range (device s) the next frame shows, None before any data."""
        if not self._live:
            return self._paused_range
        span = self.buffer.span()
        if span is None:
            return None
        return span[1] - self._window_s, span[1]

    def redraw(self, force: bool = False) -> bool:
        """Draw one frame if anything changed; returns True when it drew."""
        t0 = time.perf_counter()
        cups = self.buffer.cups
        if cups != self._cups:
            self._rebuild(cups)
        if not self._plots:
            return False
        rng = self.target_range()
        if rng is None:
            return False
        x0, x1 = rng
        columns = max(16, int(self._plots[0].getViewBox().width()))
        span = self.buffer.span()
        # A past window whose data is all still held does not change while
        # acquisition goes on: skip it even though the buffer's version moves.
        settled = (not self._live and span is not None and x1 < span[1] and x0 >= span[0])
        key = (None if settled else self.buffer.version, self.buffer.epoch, x0, x1, columns,
               self._unit, self._mode, cups)
        if key == self._last_key and not force:
            self.stats.skipped += 1
            return False
        self._last_key = key
        t, lo, hi = self.buffer.view(x0, x1, columns)
        factor = PER_KPA[self._unit]
        x = np.repeat(t, 2)
        # (m, cups) lo/hi -> (cups, 2m) interleaved: each column drawn low->high.
        y = np.empty((cups, 2 * t.shape[0]), np.float64)
        y[:, 0::2] = lo.T
        y[:, 1::2] = hi.T
        if factor != 1.0:
            y *= factor
        for c, curve in enumerate(self._curves):
            curve.setData(x, y[c], connect="finite", skipFiniteCheck=True)
        # Programmatic ranges do not emit sigRangeChangedManually, so this
        # does not count as the user scrolling.
        self._plots[0].getViewBox().setXRange(x0, x1, padding=0)
        ms = (time.perf_counter() - t0) * 1e3
        self.stats.drawn += 1
        self.stats.last_ms = ms
        self.stats.max_ms = max(self.stats.max_ms, ms)
        return True
