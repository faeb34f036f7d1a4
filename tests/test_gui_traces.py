"""TracePanel (offscreen): gaps drawn as gaps, units, skipped frames, live/pause."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from firmware_bridge.messages import DeviceInfo, SampleBlock
from monitor.display_buffer import DisplayBuffer
from monitor.gui.style import cup_color
from monitor.gui.traces import TracePanel

pytestmark = pytest.mark.gui


def _block(t0: float, n: int, cups: int, value: float = 22.0, rate: float = 100.0,
           gap: bool = False) -> SampleBlock:
    t = t0 + np.arange(n) / rate
    return SampleBlock(t, np.full((n, cups), value, np.float32), np.zeros((n, cups), np.uint8),
                       gap_before=gap)


@pytest.fixture
def buf() -> DisplayBuffer:
    b = DisplayBuffer()
    b.on_message(DeviceInfo("T", (1, 0, 0), cups=2, rate_hz=100))
    return b


@pytest.fixture
def panel(qtbot, buf):
    p = TracePanel(buf, window_s=10)
    qtbot.addWidget(p)
    p.resize(700, 400)
    p.show()
    qtbot.waitExposed(p)
    return p


def _colour_pixels_in_columns(panel: TracePanel, cup: int, t: float) -> int:
    """Pixels of ``cup``'s trace colour within 2 px of device time ``t``."""
    vb = panel.plots[0].getViewBox()
    off = panel.row_offset(cup)

    def at(kpa: float) -> QtCore.QPoint:
        return panel.graphics.mapFromScene(vb.mapViewToScene(QtCore.QPointF(t, off + kpa)))

    view_pt = at(22.0)
    img = panel.graphics.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB32)
    want = QtGui.QColor(cup_color(cup))
    top, bottom = int(at(35).y()), int(at(0).y())   # only this cup's row
    count = 0
    for x in range(int(view_pt.x()) - 2, int(view_pt.x()) + 3):
        for y in range(max(0, top), min(img.height(), bottom)):
            px = img.pixelColor(x, y)  # the translucent band may tint the line slightly
            if (abs(px.red() - want.red()) + abs(px.green() - want.green())
                    + abs(px.blue() - want.blue())) < 24:
                count += 1
    return count


def test_a_gap_is_drawn_as_a_gap_not_bridged(qtbot, panel, buf):
    buf.on_block(_block(0.0, 400, 2))                       # 0-4 s
    buf.on_block(_block(6.0, 401, 2, gap=True))             # 6-10 s after a 2 s loss
    assert panel.redraw()
    qtbot.wait(1)  # let the paint happen
    x, y = panel.curves[0].getData()
    assert np.isnan(y).any() and np.isfinite(y).sum() > 100
    assert _colour_pixels_in_columns(panel, 1, 2.3) > 0      # data drawn...
    assert _colour_pixels_in_columns(panel, 1, 8.3) > 0
    assert _colour_pixels_in_columns(panel, 1, 5.3) == 0     # ...and nothing across the gap


def test_values_follow_the_unit_and_bands_are_drawn(panel, buf):
    buf.on_block(_block(0.0, 300, 2, value=20.0))
    panel.set_bands([(20.0, 25.0), (18.0, 22.0)])
    panel.set_unit("mmHg")
    assert panel.redraw()
    _, y = panel.curves[1].getData()
    assert np.nanmax(y) - panel.row_offset(2) == pytest.approx(20.0 * 7.50062, rel=1e-5)
    off1, off2 = panel.row_offset(1), panel.row_offset(2)
    assert off1 > off2 + 35 * 7.50062                           # cup 1's row above cup 2's
    assert panel.bands_drawn() == [
        pytest.approx((off1 + 20.0 * 7.50062, off1 + 25.0 * 7.50062)),
        pytest.approx((off2 + 18.0 * 7.50062, off2 + 22.0 * 7.50062))]
    x0, x1 = panel.plots[0].getViewBox().viewRange()[0]
    band = panel._band_items[0][1].rect()
    assert band.left() <= x0 and band.right() >= x1         # covers the whole time axis
    panel.set_mode("overlay")
    panel.redraw()
    _, y = panel.curves[1].getData()
    assert np.nanmax(y) == pytest.approx(20.0 * 7.50062, rel=1e-5)   # no offset overlaid
    assert sorted(panel.bands_drawn()) == [pytest.approx((18.0 * 7.50062, 22.0 * 7.50062)),
                                           pytest.approx((20.0 * 7.50062, 25.0 * 7.50062))]


def test_unchanged_frames_are_skipped(panel, buf):
    buf.on_block(_block(0.0, 100, 2))
    assert panel.redraw()
    assert not panel.redraw()                                # nothing new: no work
    assert panel.stats.skipped == 1
    buf.on_block(_block(1.0, 10, 2))
    assert panel.redraw()


def test_pause_and_scroll_back_while_acquisition_continues_then_live(panel, buf):
    buf.on_block(_block(0.0, 3000, 2))                       # 0-30 s
    panel.redraw()
    assert panel.is_live and panel.target_range() == pytest.approx((19.99, 29.99))
    panel.scroll_to(12.0)
    assert not panel.is_live and panel.live_button.text() == "Live"
    assert panel.redraw()
    buf.on_block(_block(30.0, 500, 2))                       # acquisition goes on
    assert not panel.redraw()                                # the past window is settled
    x0, x1 = panel.plots[0].getViewBox().viewRange()[0]
    assert (x0, x1) == pytest.approx((2.0, 12.0))
    panel.live_button.click()
    assert panel.is_live
    assert panel.redraw()
    x0, x1 = panel.plots[0].getViewBox().viewRange()[0]
    assert x1 == pytest.approx(34.99)


def test_user_zooming_the_time_axis_pauses_the_panel(qtbot, panel, buf):
    buf.on_block(_block(0.0, 2000, 2))
    panel.redraw()
    vb = panel.plots[0].getViewBox()
    view = panel.graphics
    pos = view.mapFromScene(vb.mapViewToScene(QtCore.QPointF(15.0, 20.0)))
    wheel = QtGui.QWheelEvent(QtCore.QPointF(pos), QtCore.QPointF(view.viewport().mapToGlobal(pos)),
                              QtCore.QPoint(0, 0), QtCore.QPoint(0, 120),
                              QtCore.Qt.MouseButton.NoButton, QtCore.Qt.KeyboardModifier.NoModifier,
                              QtCore.Qt.ScrollPhase.NoScrollPhase, False)
    with qtbot.waitSignal(panel.liveChanged, timeout=2000) as sig:
        QtWidgets.QApplication.sendEvent(view.viewport(), wheel)   # a mouse-wheel zoom
    assert sig.args == [False] and not panel.is_live
    x0, x1 = panel.target_range()
    assert x1 - x0 < 10.0 and x0 < 15.0 < x1                 # zoomed in about the mouse
    buf.on_block(_block(20.0, 100, 2))
    panel.redraw()
    assert panel.target_range() == pytest.approx((x0, x1))  # stays put while data arrives


def test_modes_windows_and_timer(qtbot, panel, buf):
    buf.on_block(_block(0.0, 100, 2))
    panel.redraw()
    assert len(panel.curves) == 2 and panel.row_offset(1) > 0
    panel.mode_box.setCurrentIndex(panel.mode_box.findData("overlay"))
    assert panel.mode == "overlay"
    panel.redraw()
    assert len(panel.curves) == 2 and panel.row_offset(1) == 0
    panel.set_window(3)
    assert panel.window_s == 10
    panel.set_window(1e6)
    assert panel.window_s == 600 and panel.window_box.currentText() == "10 min"
    panel.set_fps(500)
    assert panel.timer.interval() >= 16                      # never faster than 60 Hz
    drawn = panel.stats.drawn
    panel.start()
    buf.on_block(_block(1.0, 10, 2))
    qtbot.waitUntil(lambda: panel.stats.drawn > drawn, timeout=3000)
    panel.stop()
