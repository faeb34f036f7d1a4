"""The replay bar: which session is playing, play/pause, speed (1x, 10x,
max) and a timeline over the session's whole device-time span.

The timeline marks every recorded alarm (raised) in its priority's colour
and every band set during the recording (a short light-blue tick below the
track), shades what has been played, and seeks when clicked or dragged (on
release; arrow keys step 10 s, Page Up/Down 1 min). The window does the
seeking: it restarts the replay at the chosen time with a pre-roll of one
trace window (docs/gui.md, "Replay and the timeline").

The statistics label says which stretch the tiles' "% in band" covers (the
whole session so far, or only from the seek's pre-roll on), and *Summary…*
opens the whole session's summary.
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6 import QtCore, QtGui, QtWidgets

from .style import severity_colors
from .tiles import clock

#: (label, device seconds per wall second; None = as fast as possible).
SPEEDS: tuple[tuple[str, float | None], ...] = (("1x", 1.0), ("10x", 10.0), ("max", None))
#: Colour of a band-change tick on the timeline.
BAND_MARK = "#81d4fa"


class Timeline(QtWidgets.QWidget):
    """A session's device-time span; click or drag to seek."""

    seekRequested = QtCore.Signal(float)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.t0, self.t1 = 0.0, 1.0
        self.position: float | None = None
        self._drag: float | None = None
        self._marks: list[tuple[float, str]] = []
        self._band_marks: list[float] = []
        self.setMinimumHeight(22)
        self.setMinimumWidth(160)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding,
                           QtWidgets.QSizePolicy.Policy.Fixed)
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)
        self.setCursor(QtCore.Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Session timeline: click or drag to review any moment "
                        "(arrows: 10 s, Page Up/Down: 1 min); coloured marks are alarms")

    def set_span(self, t0: float, t1: float) -> None:
        self.t0, self.t1 = float(t0), max(float(t1), float(t0) + 1e-3)
        self.update()

    def set_position(self, t: float | None) -> None:
        if t != self.position:
            self.position = t
            self.update()

    def set_marks(self, marks: Iterable[tuple[float, str]]) -> None:
        """(device t, priority) of the alarms to mark."""
        self._marks = [(float(t), str(p)) for t, p in marks]
        self.update()

    def set_band_marks(self, times: Iterable[float]) -> None:
        """Device times at which a band was set during the recording."""
        self._band_marks = [float(t) for t in times]
        self.update()

    @property
    def band_marks(self) -> list[float]:
        return list(self._band_marks)

    @property
    def dragging(self) -> float | None:
        """Where the handle is being dragged to (None when not dragging)."""
        return self._drag

    # geometry
    def _x(self, t: float) -> float:
        w = self.width() - 12
        return 6 + w * (min(max(t, self.t0), self.t1) - self.t0) / (self.t1 - self.t0)

    def time_at(self, x: float) -> float:
        w = max(1, self.width() - 12)
        f = min(max((x - 6) / w, 0.0), 1.0)
        return self.t0 + f * (self.t1 - self.t0)

    # painting
    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        p = QtGui.QPainter(self)
        h = self.height()
        track = QtCore.QRectF(6, h / 2 - 4, self.width() - 12, 8)
        p.fillRect(track, QtGui.QColor("#37474f"))
        pos = self._drag if self._drag is not None else self.position
        if pos is not None:
            played = QtCore.QRectF(track.left(), track.top(), self._x(pos) - track.left(),
                                   track.height())
            p.fillRect(played, QtGui.QColor("#78909c"))
        for t, prio in self._marks:
            x = self._x(t)
            p.setPen(QtGui.QPen(QtGui.QColor(severity_colors(prio)[0]), 2))
            p.drawLine(QtCore.QPointF(x, 2), QtCore.QPointF(x, h - 2))
        p.setPen(QtGui.QPen(QtGui.QColor(BAND_MARK), 2))
        for t in self._band_marks:
            x = self._x(t)
            p.drawLine(QtCore.QPointF(x, h / 2 + 5), QtCore.QPointF(x, h))
        if pos is not None:
            x = self._x(pos)
            p.setPen(QtGui.QPen(QtGui.QColor("#ffffff"), 3))
            p.drawLine(QtCore.QPointF(x, 0), QtCore.QPointF(x, h))
        if self.hasFocus():
            p.setPen(QtGui.QPen(QtGui.QColor("#4fc3f7"), 1))
            p.drawRect(self.rect().adjusted(0, 0, -1, -1))
        p.end()

    # interaction
    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        if event.button() == QtCore.Qt.MouseButton.LeftButton:
            self._drag = self.time_at(event.position().x())
            self.update()

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:
        if self._drag is not None:
            self._drag = self.time_at(event.position().x())
            self.update()

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:
        if self._drag is not None and event.button() == QtCore.Qt.MouseButton.LeftButton:
            t, self._drag = self._drag, None
            self.position = t
            self.update()
            self.seekRequested.emit(t)

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        steps = {QtCore.Qt.Key.Key_Left: -10.0, QtCore.Qt.Key.Key_Right: 10.0,
                 QtCore.Qt.Key.Key_PageUp: -60.0, QtCore.Qt.Key.Key_PageDown: 60.0,
                 QtCore.Qt.Key.Key_Home: -1e12, QtCore.Qt.Key.Key_End: 1e12}
        step = steps.get(QtCore.Qt.Key(event.key()))
        if step is None:
            super().keyPressEvent(event)
            return
        base = self.position if self.position is not None else self.t0
        t = min(max(base + step, self.t0), self.t1)
        self.position = t
        self.update()
        self.seekRequested.emit(t)


class ReplayBar(QtWidgets.QFrame):
    """Replay of a stored session: title, play/pause, speed, timeline, time."""

    seekRequested = QtCore.Signal(float)
    speedChanged = QtCore.Signal(object)     # float or None (as fast as possible)
    playToggled = QtCore.Signal()
    closeRequested = QtCore.Signal()
    summaryRequested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("replayBar")
        self.setStyleSheet("QFrame#replayBar { background: #1c313a; border-radius: 4px; }"
                           "QLabel { color: #ffffff; }")
        self.title = QtWidgets.QLabel("")
        self.title.setStyleSheet("font-weight: bold;")
        self.title.setSizePolicy(QtWidgets.QSizePolicy.Policy.Maximum,
                                 QtWidgets.QSizePolicy.Policy.Preferred)
        self.title.setMaximumWidth(300)
        self.play_button = QtWidgets.QPushButton("Pause")
        self.play_button.setToolTip("Pause or resume the replay")
        self.speed_box = QtWidgets.QComboBox()
        for label, speed in SPEEDS:
            self.speed_box.addItem(label, speed)
        self.speed_box.setToolTip("Replay speed: real time, 10x, or as fast as possible")
        self.timeline = Timeline()
        self.time_label = QtWidgets.QLabel("0:00 / 0:00")
        self.time_label.setMinimumWidth(96)
        self.time_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight
                                     | QtCore.Qt.AlignmentFlag.AlignVCenter)
        self.stats_label = QtWidgets.QLabel("")
        self.stats_label.setObjectName("statsWindow")
        self.summary_button = QtWidgets.QPushButton("Summary…")
        self.summary_button.setToolTip("The whole session's statistics per cup (time in "
                                       "target, mean, min, max, excursions)")
        self.close_button = QtWidgets.QPushButton("Close replay")
        row = QtWidgets.QHBoxLayout(self)
        row.setContentsMargins(6, 2, 6, 2)
        row.setSpacing(6)
        row.addWidget(self.title)
        row.addWidget(self.play_button)
        row.addWidget(QtWidgets.QLabel("Speed"))
        row.addWidget(self.speed_box)
        row.addWidget(self.timeline, 1)
        row.addWidget(self.time_label)
        row.addWidget(self.stats_label)
        row.addWidget(self.summary_button)
        row.addWidget(self.close_button)
        self.timeline.seekRequested.connect(self.seekRequested)
        self.play_button.clicked.connect(self.playToggled)
        self.close_button.clicked.connect(self.closeRequested)
        self.summary_button.clicked.connect(self.summaryRequested)
        self.speed_box.currentIndexChanged.connect(
            lambda i: self.speedChanged.emit(self.speed_box.itemData(i)))

    @property
    def speed(self) -> float | None:
        return self.speed_box.currentData()

    def set_speed(self, speed: float | None) -> None:
        """Select ``speed`` (1.0, 10.0 or None) without emitting."""
        i = next((i for i in range(self.speed_box.count())
                  if self.speed_box.itemData(i) == speed), -1)
        if i < 0 and speed is not None:   # e.g. cupmon --replay 7 --speed 4
            self.speed_box.addItem(f"{speed:g}x", float(speed))
            i = self.speed_box.count() - 1
        if i >= 0:
            self.speed_box.blockSignals(True)
            self.speed_box.setCurrentIndex(i)
            self.speed_box.blockSignals(False)

    def set_session(self, title: str, t0: float, t1: float,
                    marks: Iterable[tuple[float, str]] = ()) -> None:
        self.title.setText(title)
        self.timeline.set_span(t0, t1)
        self.timeline.set_marks(marks)
        self.show_position(t0)

    def set_band_changes(self, changes: Iterable[tuple[float, str]]) -> None:
        """(device t, text) of the bands set during the recording: ticks on
        the timeline, listed in its tooltip."""
        changes = list(changes)
        self.timeline.set_band_marks(t for t, _ in changes)
        tip = ("Session timeline: click or drag to review any moment (arrows: 10 s, "
               "Page Up/Down: 1 min); coloured marks are alarms")
        if changes:
            tip += ", light-blue ticks below are band changes:\n" + "\n".join(
                f"{clock(t - self.timeline.t0)}  {text}" for t, text in changes)
        self.timeline.setToolTip(tip)

    def show_stats_window(self, t_from: float | None) -> None:
        """Say what the tiles' statistics ("% in band") cover: the whole
        session so far (``t_from`` None), or only from device time ``t_from``
        on (a seek's pre-roll: the replay's pipeline starts there)."""
        t0 = self.timeline.t0
        if t_from is None or t_from <= t0:
            self.stats_label.setText("% in band: whole session")
            self.stats_label.setStyleSheet("")
            self.stats_label.setToolTip(
                "The tiles' \"% in band\" counts from the start of the session to the "
                "position shown. Summary… gives the whole session's figures.")
        else:
            since = clock(t_from - t0)
            self.stats_label.setText(f"% in band: from {since} only")
            self.stats_label.setStyleSheet("color: #ffd54f; font-weight: bold;")
            self.stats_label.setToolTip(
                f"After a seek the replay starts {since} into the session (one trace window "
                "before the chosen time), so the tiles' \"% in band\", time on the skin and "
                "dwell alarms count from there, not from the start. Summary… gives the whole "
                "session's figures; Play again from the start counts the whole session.")

    def show_position(self, t: float | None) -> None:
        tl = self.timeline
        tl.set_position(t)
        shown = tl.dragging if tl.dragging is not None else t
        here = clock((shown or tl.t0) - tl.t0)
        self.time_label.setText(f"{here} / {clock(tl.t1 - tl.t0)}")

    def set_playing(self, playing: bool, ended: bool = False) -> None:
        self.play_button.setText("Pause" if playing else ("Play again" if ended else "Play"))
