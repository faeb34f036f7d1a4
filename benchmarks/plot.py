"""Draw the scaling figure (``docs/img/scaling.png``) with QPainter into a
QImage: four panels (cost against cups and against rate; memory against cups
and against rate) with axes, ticks, labels, legends and the linear fit.

matplotlib is not a dependency, and pyqtgraph's exporter needs a live scene;
plain QPainter on an offscreen QGuiApplication needs neither a display nor a
widget. Run: ``QT_QPA_PLATFORM=offscreen python -m benchmarks.plot IN.json OUT.png``
(IN.json: the result of :func:`benchmarks.scaling.run`).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

W, H = 1400, 940
COLORS = {"check": "#1565c0", "decode": "#ef6c00", "fit": "#616161", "peak": "#2e7d32",
          "work": "#8e24aa"}


def nice_ticks(hi: float, n: int = 5) -> list[float]:
    """Ticks 0..>=hi at a 1/2/5 x 10^k step, about ``n`` of them."""
    if hi <= 0:
        return [0.0, 1.0]
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    k = math.ceil(hi / step - 1e-9)
    return [i * step for i in range(k + 1)]


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 10 or v == 0 else f"{v:.3g}"


class Panel:
    """One chart: a rectangle on the image with its own data ranges."""

    def __init__(self, painter, rect, title: str, xlabel: str, ylabel: str,
                 xmax: float, ymax: float, xticks: list[float] | None = None) -> None:
        from PySide6 import QtCore

        self.p = painter
        left, top, width, height = rect
        self.plot = QtCore.QRectF(left + 78, top + 34, width - 118, height - 90)
        self.xt = xticks or nice_ticks(xmax)
        self.yt = nice_ticks(ymax)
        self.xmax, self.ymax = self.xt[-1], self.yt[-1]
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.legend: list[tuple[str, str, bool]] = []

    def xy(self, x: float, y: float):
        from PySide6 import QtCore

        r = self.plot
        return QtCore.QPointF(r.left() + r.width() * x / self.xmax,
                              r.bottom() - r.height() * y / self.ymax)

    def frame(self) -> None:
        from PySide6 import QtCore, QtGui

        p, r = self.p, self.plot
        fm = QtGui.QFontMetrics(p.font())
        p.setPen(QtGui.QPen(QtGui.QColor("#e0e0e0"), 1))
        for y in self.yt:
            p.drawLine(self.xy(0, y), self.xy(self.xmax, y))
        for x in self.xt:
            p.drawLine(self.xy(x, 0), self.xy(x, self.ymax))
        p.setPen(QtGui.QPen(QtGui.QColor("black"), 1.5))
        p.drawLine(r.bottomLeft(), r.bottomRight())
        p.drawLine(r.bottomLeft(), r.topLeft())
        for y in self.yt:
            pt = self.xy(0, y)
            p.drawLine(pt, pt + QtCore.QPointF(-5, 0))
            s = _fmt(y)
            p.drawText(QtCore.QPointF(pt.x() - 9 - fm.horizontalAdvance(s), pt.y() + 5), s)
        for x in self.xt:
            pt = self.xy(x, 0)
            p.drawLine(pt, pt + QtCore.QPointF(0, 5))
            s = _fmt(x)
            p.drawText(QtCore.QPointF(pt.x() - fm.horizontalAdvance(s) / 2, pt.y() + 21), s)
        p.drawText(QtCore.QPointF(r.center().x() - fm.horizontalAdvance(self.xlabel) / 2,
                                  r.bottom() + 44), self.xlabel)
        p.save()
        p.translate(r.left() - 60, r.center().y() + fm.horizontalAdvance(self.ylabel) / 2)
        p.rotate(-90)
        p.drawText(QtCore.QPointF(0, 0), self.ylabel)
        p.restore()
        bold = QtGui.QFont(p.font())
        bold.setBold(True)
        bold.setPointSizeF(p.font().pointSizeF() * 1.1)
        p.save()
        p.setFont(bold)
        p.drawText(QtCore.QPointF(r.left(), r.top() - 12), self.title)
        p.restore()

    def series(self, xs: list[float], ys: list[float], label: str, color: str,
               dashed: bool = False, markers: bool = True) -> None:
        from PySide6 import QtCore, QtGui

        p = self.p
        pen = QtGui.QPen(QtGui.QColor(color), 2.2)
        if dashed:
            pen.setStyle(QtCore.Qt.PenStyle.DashLine)
        p.setPen(pen)
        pts = [self.xy(x, y) for x, y in zip(xs, ys, strict=True)]
        for a, b in zip(pts[:-1], pts[1:], strict=False):
            p.drawLine(a, b)
        if markers:
            p.setBrush(QtGui.QColor(color))
            for pt in pts:
                p.drawEllipse(pt, 4.5, 4.5)
            p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        self.legend.append((label, color, dashed))

    def draw_legend(self) -> None:
        from PySide6 import QtCore, QtGui

        p = self.p
        fm = QtGui.QFontMetrics(p.font())
        w = 46 + max(fm.horizontalAdvance(t) for t, _, _ in self.legend)
        h = 10 + 22 * len(self.legend)
        box = QtCore.QRectF(self.plot.left() + 12, self.plot.top() + 10, w, h)
        p.setPen(QtGui.QPen(QtGui.QColor("#9e9e9e"), 1))
        p.setBrush(QtGui.QColor(255, 255, 255, 235))
        p.drawRect(box)
        p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        for i, (text, color, dashed) in enumerate(self.legend):
            y = box.top() + 16 + 22 * i
            pen = QtGui.QPen(QtGui.QColor(color), 2.2)
            if dashed:
                pen.setStyle(QtCore.Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.drawLine(QtCore.QPointF(box.left() + 8, y), QtCore.QPointF(box.left() + 34, y))
            p.setPen(QtGui.QColor("black"))
            p.drawText(QtCore.QPointF(box.left() + 40, y + 5), text)


def render(r: dict, out: Path) -> None:
    from PySide6 import QtCore, QtGui

    _app = QtGui.QGuiApplication.instance() or QtGui.QGuiApplication(sys.argv[:1])
    img = QtGui.QImage(W, H, QtGui.QImage.Format.Format_RGB32)
    img.fill(QtGui.QColor("white"))
    p = QtGui.QPainter(img)
    p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    font = QtGui.QFont("DejaVu Sans")
    font.setPixelSize(15)
    p.setFont(font)

    pts = r["points"]
    by_cups = sorted((q for q in pts if q["rate_hz"] == 1000), key=lambda q: q["cups"])
    by_rate = sorted((q for q in pts if q["cups"] == 8), key=lambda q: q["rate_hz"])

    def pct(v: float) -> float:
        return 100.0 * v  # CPU s per s of data -> % of one core

    big = QtGui.QFont(font)
    big.setPixelSize(20)
    big.setBold(True)
    p.setFont(big)
    p.drawText(QtCore.QPointF(24, 34), "cupmon decode + check: cost and memory against cups "
                                       "and sample rate")
    p.setFont(font)
    p.drawText(QtCore.QPointF(24, 58),
               f"Decoder + MonitorPipeline on 'normal' captures read in {r['chunk_bytes']} B "
               f"chunks; cost = CPU time per second of data (100 % = one core busy).")
    fc, fr = r["fit_cups"], r["fit_rate"]
    p.drawText(QtCore.QPointF(24, 80),
               f"Least-squares lines: against cups R\u00b2 = {fc['r2']:.3f}, against rate "
               f"R\u00b2 = {fr['r2']:.3f}.   Machine: {r.get('machine', 'unknown')}")

    half_w, half_h, top = W // 2, (H - 96) // 2, 92
    panels = []
    for col, (rows, key, xlabel, xticks, fit) in enumerate((
            (by_cups, "cups", "cups (at 1000 Hz)", [0, 4, 8, 12, 16], fc),
            (by_rate, "rate_hz", "sample rate, Hz (8 cups)", [0, 500, 1000, 1500, 2000], fr))):
        xs = [q[key] for q in rows]
        xmax = max(xs)
        cost = [pct(q["cost_cpu_per_s"]) for q in rows]
        dec = [pct(q["decode_cost_cpu_per_s"]) for q in rows]
        pa = Panel(p, (col * half_w, top, half_w, half_h),
                   f"CPU cost against {'cups' if key == 'cups' else 'sample rate'}",
                   xlabel, "% of one core at real time", xmax, max(cost) * 1.15, xticks)
        pa.frame()
        pa.series(xs, cost, "decode + check (MonitorPipeline)", COLORS["check"])
        pa.series(xs, dec, "decode only", COLORS["decode"])
        line_x = [0.0, pa.xmax]
        pa.series(line_x, [pct(fit["intercept"] + fit["slope"] * x) for x in line_x],
                  f"least-squares line (R\u00b2 {fit['r2']:.3f})", COLORS["fit"], dashed=True,
                  markers=False)
        panels.append(pa)
        peak = [q["peak_rss_mb"] for q in rows]
        work = [q["working_mb"] for q in rows]
        pm = Panel(p, (col * half_w, top + half_h, half_w, half_h),
                   f"Memory against {'cups' if key == 'cups' else 'sample rate'}",
                   xlabel, "MB", xmax, max(peak) * 1.3, xticks)
        pm.frame()
        pm.series(xs, peak, "peak RSS of the process", COLORS["peak"])
        pm.series(xs, work, "working memory (peak - after imports)", COLORS["work"])
        panels.append(pm)
    for pa in panels:
        pa.draw_legend()
    p.end()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not img.save(str(out)):
        raise RuntimeError(f"could not write {out}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    render(json.loads(Path(argv[0]).read_text()), Path(argv[1]))
    print(json.dumps({"png": argv[1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
