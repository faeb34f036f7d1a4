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
from PySide6 import QtCore, QtGui, QtWidgets

from firmware_bridge.conditions import BAND_HIGH_KPA, BAND_LOW_KPA, HARD_LIMIT_KPA
from monitor.display_buffer import DisplayBuffer
from monitor.units import PER_KPA, normalize_unit

from .style import BAND_FILL, BAND_LINE, ROW_LINE, cup_color

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


class EnvelopeCurve(pg.PlotCurveItem):
    """A PlotCurveItem told its extent instead of scanning its data for it.

    pyqtgraph recomputes a curve's bounds (nanmin/nanmax of x and y, plus
    pixel padding) whenever the view moves, i.e. every live frame: ~0.3 ms
    per curve here. The panel already knows the window and computes all
    cups' y extents in one vectorised pass."""

    _extent: QtCore.QRectF | None = None

    def set_extent(self, x0: float, x1: float, y0: float, y1: float) -> None:
        self._extent = QtCore.QRectF(x0, y0, x1 - x0, y1 - y0)

    def boundingRect(self) -> QtCore.QRectF:
        if self._extent is None:
            return super().boundingRect()
        return self._extent

    def dataBounds(self, ax: int, frac: float = 1.0, orthoRange=None):
        if self._extent is None:
            return super().dataBounds(ax, frac, orthoRange)
        r = self._extent
        return (r.left(), r.right()) if ax == 0 else (r.top(), r.bottom())


class BandRect(QtWidgets.QGraphicsRectItem):
    """A horizontal strip across the plot: a target band (opaque fill under the
    curves, limits outlined) or, with zero height, a row separator. A plain
    rect item: pyqtgraph's LinearRegionItem cost ~1 ms per band per frame
    here (measured)."""

    def __init__(self, lo: float, hi: float, band: bool = True) -> None:
        super().__init__(0.0, lo, 1.0, hi - lo)
        self._lo, self._hi = lo, hi
        self.is_band = band
        if band:
            self.setBrush(QtGui.QBrush(QtGui.QColor(*BAND_FILL)))
        pen = QtGui.QPen(QtGui.QColor(*(BAND_LINE if band else ROW_LINE)))
        pen.setCosmetic(True)  # 1 px whatever the zoom
        self.setPen(pen)
        self.setZValue(-10)

    def set_x(self, x0: float, x1: float) -> None:
        self.setRect(x0, self._lo, x1 - x0, self._hi - self._lo)

    def region(self) -> tuple[float, float]:
        return self._lo, self._hi


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
        self._curves: list[EnvelopeCurve] = []
        self._band_items: list[tuple[pg.PlotItem, BandRect]] = []

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
                                    "Live returns to the present [F5]")
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
    def curves(self) -> list[EnvelopeCurve]:
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
        """"rows" (one row per cup) or "overlay" (all cups on one scale)."""
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
            self._last_key = None  # row offsets may have moved

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
    # One PlotItem for every mode: "rows" stacks the cups at vertical offsets
    # in it, "overlay" puts them all at offset 0. Sixteen linked PlotItems
    # cost ~6 ms a frame in range propagation and axis repaints alone
    # (measured, docs/gui.md); one ViewBox moves once per frame.
    @property
    def row_span(self) -> float:
        """Height of one row in display units (rows mode)."""
        return (self._y_top() + 1.0) * PER_KPA[self._unit] * 1.08

    def row_offset(self, cup: int) -> float:
        """What is added to ``cup``'s values to place its row (display units)."""
        if self._mode != "rows":
            return 0.0
        return (self._cups - cup) * self.row_span

    def _y_top(self) -> float:
        """Top of a row's scale, kPa: above the hard limit and every band."""
        return max(HARD_LIMIT_KPA + 5.0, 1.3 * max((b[1] for b in self._bands), default=0.0))

    def _rebuild(self, cups: int) -> None:
        self.graphics.clear()
        self._plots, self._curves, self._band_items = [], [], []
        self._cups = cups
        self._last_key = None
        if cups <= 0:
            return
        p: pg.PlotItem = self.graphics.addPlot(row=0, col=0)
        p.setMenuEnabled(False)
        p.hideButtons()
        p.setClipToView(False)  # the buffer already clips to the window
        vb = p.getViewBox()
        vb.setMouseEnabled(x=True, y=False)
        vb.disableAutoRange()  # ranges are set per frame; no bounds scans
        vb.sigRangeChangedManually.connect(self._on_manual_range)
        vb.sigXRangeChanged.connect(self._fit_bands)
        p.getAxis("left").setWidth(52)
        p.setLabel("bottom", "device time (s)")
        # The time axis moves every live frame; major ticks only (their labels
        # are what is read) halves its per-frame text layout.
        p.getAxis("bottom").setStyle(maxTickLevel=1, maxTextLevel=0)
        # No grid: translucent grid lines cost more than the traces (measured).
        self._plots.append(p)
        for c in range(cups):
            curve = EnvelopeCurve(pen=pg.mkPen(cup_color(c + 1), width=1),
                                  connect="finite", skipFiniteCheck=True, antialias=False)
            p.addItem(curve)
            self._curves.append(curve)
        if self._mode == "overlay":
            p.setLabel("left", f"Suction ({self._unit})")
            legend = p.addLegend(offset=(-10, 5), colCount=min(cups, 8))
            for c, curve in enumerate(self._curves):
                legend.addItem(curve, f"{c + 1}")
        self._update_bands()

    def _update_bands(self) -> None:
        """Band rectangles, row separators, y range and left-axis ticks."""
        factor = PER_KPA[self._unit]
        for plot, item in self._band_items:
            plot.removeItem(item)
        self._band_items = []
        if not self._plots:
            return
        plot = self._plots[0]
        top = self._y_top() * factor
        if self._mode == "rows":
            span = self.row_span
            plot.getViewBox().setYRange(-1.0 * factor, self._cups * span - factor, padding=0)
            major, minor = [], []
            for c in range(1, self._cups + 1):
                off = self.row_offset(c)
                lo, hi = self.band(c)
                name = f"Cup {c}" if self._cups <= 8 else f"{c}"
                if self._cups <= 4:  # tall rows: the band's numbers, the name above them
                    major.append((off + 0.9 * top, name))
                    minor += [(off + lo * factor, f"{lo * factor:.0f}"),
                              (off + hi * factor, f"{hi * factor:.0f}")]
                else:
                    major.append((off + 0.5 * (lo + hi) * factor, name))
                self._add_rect(off + lo * factor, off + hi * factor, band=True)
                if c < self._cups:
                    sep = off + top + 0.5 * (span - top - factor)
                    self._add_rect(sep, sep, band=False)
            plot.getAxis("left").setTicks([major, minor])
            plot.getAxis("left").setStyle(tickLength=0)
        else:
            plot.getViewBox().setYRange(-1.0 * factor, top, padding=0)
            plot.getAxis("left").setTicks(None)
            for lo, hi in sorted({self.band(c + 1) for c in range(self._cups)}):
                self._add_rect(lo * factor, hi * factor, band=True)
        self._fit_bands()

    def _add_rect(self, y0: float, y1: float, band: bool) -> None:
        item = BandRect(y0, y1, band)
        self._plots[0].addItem(item, ignoreBounds=True)
        self._band_items.append((self._plots[0], item))

    def _fit_bands(self, *_: object) -> None:
        """Stretch the band rectangles over the visible time range (and one
        window either side, so a drag does not uncover their ends)."""
        if not self._plots:
            return
        x0, x1 = self._plots[0].getViewBox().viewRange()[0]
        w = x1 - x0
        for _, band in self._band_items:
            band.set_x(x0 - w, x1 + w)

    def bands_drawn(self) -> list[tuple[float, float]]:
        """(low, high) of every band rectangle drawn, display units, offsets included."""
        return [b.region() for _, b in self._band_items if b.is_band]

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
        if self._mode == "rows":
            # Keep each trace inside its row (the tile shows the exact value),
            # then lift it to the row. NaN (gaps) stays NaN.
            np.clip(y, -1.0 * factor, self.row_span - 2.0 * factor, out=y)
            y += np.array([self.row_offset(c + 1) for c in range(cups)])[:, None]
        # Every cup's y extent in one pass (NaN-aware; an all-NaN cup gets 0..0).
        y_lo = np.nan_to_num(np.fmin.reduce(y, axis=1)) if y.shape[1] else np.zeros(cups)
        y_hi = np.nan_to_num(np.fmax.reduce(y, axis=1)) if y.shape[1] else np.zeros(cups)
        # Pad by a few pixels' worth: Qt clips painting to the bounding rect,
        # and a flat trace would lose its 1 px line at the edges.
        y0v, y1v = self._plots[0].getViewBox().viewRange()[1]
        pad = np.full(cups, 0.01 * (y1v - y0v))
        xpad = 2.0 * (x1 - x0) / columns
        xa = (float(x[0]) if x.size else x0) - xpad
        xb = (float(x[-1]) if x.size else x1) + xpad
        # A cup without gaps takes pyqtgraph's plain polyline path (no split).
        gappy = np.isnan(y).any(axis=1) if y.shape[1] else np.zeros(cups, bool)
        for c, curve in enumerate(self._curves):
            curve.set_extent(xa, xb, float(y_lo[c] - pad[c]), float(y_hi[c] + pad[c]))
            curve.setData(x, y[c], connect="finite" if gappy[c] else "all",
                          skipFiniteCheck=True)
        # Programmatic ranges do not emit sigRangeChangedManually, so this
        # does not count as the user scrolling.
        self._plots[0].getViewBox().setXRange(x0, x1, padding=0)
        ms = (time.perf_counter() - t0) * 1e3
        self.stats.drawn += 1
        self.stats.last_ms = ms
        self.stats.max_ms = max(self.stats.max_ms, ms)
        return True
