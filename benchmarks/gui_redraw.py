"""GUI redraw benchmark: 16 cups x 1 kHz, 30 s window, offscreen.

A producer thread publishes 10-sample blocks every 10 ms (16 cups, 1 kHz)
through a Notifier to a DisplayBuffer, as the serial link would, while the
GUI thread redraws a TracePanel (one row per cup, 1366x768) as fast as it
can: a 0 ms timer calls ``redraw()`` and Qt paints the scene in the same
event loop. fps counts *painted* frames (an event filter on the viewport),
so a frame's whole cost is in the figure. A 1 ms heartbeat QTimer on the GUI
thread records the gaps between its calls: the longest gap is the longest
the GUI thread was unresponsive.

The baseline in the same run is the naive way: every frame, full
``setData`` of all 30,000 points of each of the 16 curves.

Run: ``QT_QPA_PLATFORM=offscreen python -m benchmarks.gui_redraw [--quick]``.
``run(quick)`` returns gui_fps, gui_max_stall_ms, naive_fps (and more).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np

CUPS = 16
RATE_HZ = 1000
WINDOW_S = 30.0
LONG_WINDOW_S = 600.0  # the longest window the panel offers
BLOCK = 10             # samples per block: a block every 10 ms
SIZE = (1366, 768)     # the panel's size (the smallest screen the app targets)


class _Producer(threading.Thread):
    """Synthetic acquisition: publishes blocks at the device's pace."""

    def __init__(self, notifier, t_start: float) -> None:
        super().__init__(name="bench-producer", daemon=True)
        self.notifier = notifier
        self.i = int(t_start * RATE_HZ)
        self.stop_evt = threading.Event()
        self.rng = np.random.default_rng(1)

    def block(self, n: int):
        from firmware_bridge.messages import SampleBlock

        t = (self.i + np.arange(n)) / RATE_HZ
        y = (22.5 + 2.0 * np.sin(2 * np.pi * 0.2 * t[:, None] + np.arange(CUPS))
             + self.rng.normal(0, 0.2, (n, CUPS))).astype(np.float32)
        self.i += n
        return SampleBlock(t, y, np.zeros((n, CUPS), np.uint8), time.monotonic())

    def run(self) -> None:
        t0, start_i = time.monotonic(), self.i
        while not self.stop_evt.is_set():
            self.notifier.publish_block(self.block(BLOCK))
            due = t0 + (self.i - start_i) / RATE_HZ
            self.stop_evt.wait(max(0.0, due - time.monotonic()))


class _Heartbeat:
    """A 1 ms timer on the GUI thread; the largest gap between calls is the
    longest stall of the GUI thread (ms)."""

    def __init__(self) -> None:
        from PySide6 import QtCore

        self.last = time.perf_counter()
        self.max_gap = 0.0
        self.timer = QtCore.QTimer()
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.setInterval(1)
        self.timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        now = time.perf_counter()
        self.max_gap = max(self.max_gap, now - self.last)
        self.last = now

    def start(self) -> None:
        self.last = time.perf_counter()
        self.max_gap = 0.0
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        return self.max_gap * 1e3


class _PaintCounter:
    """Counts paint events of a widget (the frames really drawn)."""

    def __init__(self, widget) -> None:
        from PySide6 import QtCore

        class _Filter(QtCore.QObject):
            def __init__(self) -> None:
                super().__init__()
                self.count = 0

            def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt name)
                if event.type() == QtCore.QEvent.Type.Paint:
                    self.count += 1
                return False

        self.filter = _Filter()
        widget.installEventFilter(self.filter)

    @property
    def count(self) -> int:
        return self.filter.count


def _drive(frame, viewport, duration_s: float) -> tuple[int, float, float, float]:
    """Call ``frame()`` from a 0 ms timer for ``duration_s``; Qt paints in the
    same loop, between frames, as in the app. Returns (painted frames, fps,
    max stall ms, GUI-thread CPU ms per frame). The CPU figure hardly moves
    when other processes load the machine; fps and stalls do."""
    from PySide6 import QtCore

    hb = _Heartbeat()
    paints = _PaintCounter(viewport)
    timer = QtCore.QTimer()
    timer.setInterval(0)
    timer.timeout.connect(frame)
    loop = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(int(duration_s * 1000), loop.quit)
    hb.start()
    start = paints.count
    t0, c0 = time.perf_counter(), time.thread_time()
    timer.start()
    loop.exec()
    timer.stop()
    elapsed, cpu = time.perf_counter() - t0, time.thread_time() - c0
    stall = hb.stop()
    frames = paints.count - start
    return frames, frames / elapsed, stall, 1e3 * cpu / max(1, frames)


def run(quick: bool = False) -> dict:
    """Measure; ``quick`` runs 2 s per mode instead of 8 s. Keys: gui_fps,
    gui_max_stall_ms, naive_fps (30 s window), gui10_* (10 min window), ..."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    from PySide6 import QtWidgets

    from firmware_bridge.listener import Notifier
    from firmware_bridge.messages import DeviceInfo
    from monitor.display_buffer import DisplayBuffer
    from monitor.gui.traces import TracePanel

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    duration = 2.0 if quick else 8.0

    buf = DisplayBuffer()
    buf.on_message(DeviceInfo("BENCH", (0, 0, 0), CUPS, RATE_HZ))
    prefill = _Producer(None, 0.0)
    for _ in range(int(LONG_WINDOW_S * RATE_HZ / 1000)):  # 10 min already held
        buf.on_block(prefill.block(1000))
    notifier = Notifier([buf])
    producer = _Producer(notifier, prefill.i / RATE_HZ)
    producer.start()
    results: dict = {"cups": CUPS, "rate_hz": RATE_HZ, "window_s": WINDOW_S,
                     "duration_s": duration}
    try:
        # --- cupmon's way: decimated envelope at pixel width --------------
        panel = TracePanel(buf, window_s=WINDOW_S)
        panel.resize(*SIZE)
        panel.show()
        app.processEvents()
        for key, window in (("gui", WINDOW_S), ("gui10", LONG_WINDOW_S)):
            panel.set_window(window)
            panel.redraw(force=True)
            app.processEvents()
            frames, fps, stall, cpu = _drive(panel.redraw, panel.graphics.viewport(), duration)
            results.update({
                f"{key}_fps": fps, f"{key}_max_stall_ms": stall, f"{key}_frames": frames,
                f"{key}_cpu_ms_per_frame": cpu,
                f"{key}_points_per_curve": int(panel.curves[0].getData()[0].shape[0]),
                f"{key}_mean_frame_ms": 1e3 * duration / max(1, frames)})
        results["gui_columns"] = int(panel.plots[0].getViewBox().width())
        panel.close()

        # --- naive baseline: full setData of every point -----------------
        glw = pg.GraphicsLayoutWidget()
        glw.resize(*SIZE)
        curves = []
        for c in range(CUPS):
            p = glw.addPlot(row=c, col=0)
            p.disableAutoRange()
            p.setYRange(-1, 35, padding=0)
            curve = pg.PlotCurveItem(pen=pg.mkPen("y", width=1), skipFiniteCheck=True)
            p.addItem(curve)
            if c:
                p.setXLink(glw.getItem(0, 0))
            curves.append(curve)
        glw.show()
        app.processEvents()
        def naive_frame() -> None:
            span = buf.span()
            assert span is not None
            t, lo, _ = buf.view(span[1] - WINDOW_S, span[1], 10**6)  # every raw sample
            for c, curve in enumerate(curves):
                curve.setData(t, lo[:, c], skipFiniteCheck=True)
            glw.getItem(0, 0).setXRange(span[1] - WINDOW_S, span[1], padding=0)

        frames, fps, stall, cpu = _drive(naive_frame, glw.viewport(), duration)
        results.update(naive_fps=fps, naive_max_stall_ms=stall, naive_frames=frames,
                       naive_cpu_ms_per_frame=cpu,
                       naive_points_per_curve=int(curves[0].getData()[0].shape[0]),
                       naive_mean_frame_ms=1e3 * duration / max(1, frames))
        glw.close()
    finally:
        producer.stop_evt.set()
        producer.join(2)
        notifier.stop()
    results["overruns"] = sum(notifier.overruns().values())
    return results


def format_table(r: dict) -> str:
    rows = [("cupmon (min/max envelope)", "gui"), ("cupmon, 10 min window", "gui10"),
            ("naive (full setData)", "naive")]
    lines = [
        f"GUI redraw: {r['cups']} cups x {r['rate_hz']} Hz, {r['window_s']:.0f} s window, "
        f"{SIZE[0]}x{SIZE[1]} offscreen, {r['duration_s']:.0f} s per mode",
        f"{'mode':<28}{'points/curve':>13}{'fps':>7}{'frame ms':>10}{'CPU ms':>8}"
        f"{'max stall ms':>14}",
    ]
    for label, k in rows:
        lines.append(f"{label:<28}{r[k + '_points_per_curve']:>13,}{r[k + '_fps']:>7.1f}"
                     f"{r[k + '_mean_frame_ms']:>10.1f}{r[k + '_cpu_ms_per_frame']:>8.1f}"
                     f"{r[k + '_max_stall_ms']:>14.1f}")
    lines.append(f"target: >= 60 fps, no stall > 50 ms; acquisition blocks dropped: "
                 f"{r['overruns']}. CPU ms = GUI-thread CPU per painted frame.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 s per mode instead of 8 s")
    args = ap.parse_args(argv)
    print(format_table(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
