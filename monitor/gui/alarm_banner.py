"""The alarm banner: the highest-priority alarm in its IEC 60601-1-8 colour,
flashing at its rate, the list of all listed alarms, and the acknowledge and
audio-pause controls (F2 and F3 anywhere in the window).

The banner decides nothing: it shows the alarm manager's list (already in
priority order) and emits requests; the window forwards them to the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6 import QtCore, QtGui, QtWidgets

from monitor.alarms import Alarm, AudioState

from .flash import Flasher
from .style import dim, severity_colors
from .tiles import clock

ACK_KEY = "F2"
PAUSE_KEY = "F3"
PRIORITY_WORD = {"high": "HIGH", "medium": "MEDIUM", "low": "LOW"}
#: The list of alarms shows at most 3 rows; the banner must leave room for traces.
LIST_MAX_HEIGHT = 56
_IDLE_BG = "#263238"


def _who(a: Alarm) -> str:
    return "Device" if a.cup is None else f"Cup {a.cup}"


class AlarmBanner(QtWidgets.QFrame):
    """Highest alarm + list + Acknowledge [F2] + Pause audio [F3]."""

    acknowledgeRequested = QtCore.Signal()
    audioPauseRequested = QtCore.Signal()

    def __init__(self, flasher: Flasher | None = None, parent: QtWidgets.QWidget | None = None,
                 pause_s: float = 120.0) -> None:
        super().__init__(parent)
        self.setObjectName("alarmBanner")
        self.flasher = flasher
        self.pause_s = pause_s
        self._priority: str | None = None
        self._flashing = False
        self._style = ""
        self._alarms: tuple[Alarm, ...] = ()

        self.priority_label = QtWidgets.QLabel("")
        self.priority_label.setObjectName("bannerPriority")
        self.priority_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.priority_label.setMinimumWidth(96)
        self.message_label = QtWidgets.QLabel("No active alarms")
        self.message_label.setObjectName("bannerMessage")
        self.message_label.setWordWrap(True)
        self.more_label = QtWidgets.QLabel("")
        self.more_label.setObjectName("bannerMore")
        self.audio_label = QtWidgets.QLabel("")
        self.audio_label.setObjectName("bannerAudio")
        self.note_label = QtWidgets.QLabel("")
        self.note_label.setObjectName("bannerNote")
        self.note_label.hide()

        self.ack_button = QtWidgets.QPushButton(f"Acknowledge [{ACK_KEY}]")
        self.ack_button.setToolTip("Acknowledge the listed alarms: silences them; latched "
                                   "alarms whose cause has ended leave the list")
        self.ack_button.clicked.connect(self.acknowledgeRequested)
        self.pause_button = QtWidgets.QPushButton(
            f"Pause audio {clock(pause_s)} [{PAUSE_KEY}]")
        self.pause_button.setToolTip("Silence the alarms present now for a while; a new "
                                     "alarm sounds at once")
        self.pause_button.clicked.connect(self.audioPauseRequested)
        for key, sig in ((ACK_KEY, self.acknowledgeRequested),
                         (PAUSE_KEY, self.audioPauseRequested)):
            sc = QtGui.QShortcut(QtGui.QKeySequence(key), self)
            sc.setContext(QtCore.Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(sig)

        self.alarm_list = QtWidgets.QListWidget()
        self.alarm_list.setObjectName("bannerList")
        self.alarm_list.setMaximumHeight(LIST_MAX_HEIGHT)
        self.alarm_list.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.alarm_list.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.alarm_list.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.alarm_list.setTextElideMode(QtCore.Qt.TextElideMode.ElideRight)
        self.alarm_list.hide()

        text = QtWidgets.QVBoxLayout()
        text.setSpacing(0)
        text.addWidget(self.message_label)
        text.addWidget(self.more_label)
        text.addWidget(self.alarm_list)
        buttons = QtWidgets.QVBoxLayout()
        buttons.setSpacing(2)
        buttons.addWidget(self.ack_button)
        buttons.addWidget(self.pause_button)
        status = QtWidgets.QVBoxLayout()
        status.setSpacing(0)
        status.addWidget(self.audio_label)
        status.addWidget(self.note_label)
        top = QtWidgets.QHBoxLayout()
        top.setContentsMargins(6, 4, 6, 4)
        top.addWidget(self.priority_label)
        top.addLayout(text, 1)
        top.addLayout(status)
        top.addLayout(buttons)
        self.setLayout(top)
        if flasher is not None:
            flasher.toggled.connect(self._on_flash)
        self._apply_style()

    # ------------------------------------------------------------------ API
    @property
    def priority(self) -> str | None:
        """Priority shown (the highest listed), None when no alarm."""
        return self._priority

    @property
    def flashing(self) -> bool:
        """True while the banner flashes: a high or medium alarm of the shown
        priority is still unacknowledged (the flash period is the Flasher's)."""
        return self._flashing

    def set_audio_note(self, text: str) -> None:
        """A standing note, e.g. "No audio device: alarms are visual only"."""
        self.note_label.setText(text)
        self.note_label.setVisible(bool(text))

    def show_alarms(self, alarms: Sequence[Alarm], highest: str | None = None,
                    audio: AudioState | None = None) -> None:
        """Show the listed alarms (highest priority first, as the manager orders
        them) and the audio state."""
        alarms = tuple(alarms)
        if highest is None and alarms:
            highest = alarms[0].priority
        sounding = any(not a.acknowledged for a in alarms if a.priority == highest)
        flashing = highest in ("high", "medium") and sounding
        changed = alarms != self._alarms
        self._alarms = alarms
        if highest != self._priority or flashing != self._flashing:
            self._priority, self._flashing = highest, flashing
            self._apply_style()
        if changed:
            self._show_list(alarms)
        self.ack_button.setEnabled(any(not a.acknowledged for a in alarms))
        self._show_audio(audio)

    def _show_list(self, alarms: tuple[Alarm, ...]) -> None:
        if not alarms:
            self.priority_label.setText("")
            self.message_label.setText("No active alarms")
            self.more_label.setText("")
            self.alarm_list.clear()
            self.alarm_list.hide()
            return
        top = alarms[0]
        self.priority_label.setText(PRIORITY_WORD.get(top.priority, top.priority.upper()))
        suffix = "" if top.state == "active" else f"  ({top.state})"
        self.message_label.setText(top.message + suffix)
        rest = len(alarms) - 1
        self.more_label.setText(f"+ {rest} more alarm{'s' if rest > 1 else ''}" if rest else "")
        self.alarm_list.clear()
        for a in alarms:
            item = QtWidgets.QListWidgetItem(
                f"{PRIORITY_WORD.get(a.priority, a.priority)} · {a.message}"
                + ("" if a.state == "active" else f"  ({a.state})"))
            item.setToolTip(f"{_who(a)}: {a.message}")
            bg, fg = severity_colors(a.priority)
            item.setBackground(QtGui.QColor(bg if not a.acknowledged else dim(bg, 0.6)))
            item.setForeground(QtGui.QColor(fg if not a.acknowledged else "#ffffff"))
            self.alarm_list.addItem(item)
        # As tall as its rows, at most three (the banner must leave room for traces).
        rows = min(3, len(alarms))
        row_h = self.alarm_list.sizeHintForRow(0) if alarms else 0
        self.alarm_list.setFixedHeight(min(LIST_MAX_HEIGHT,
                                           rows * max(row_h, 1) + 2 * self.alarm_list.frameWidth()))
        self.alarm_list.setVisible(len(alarms) > 1)

    def _show_audio(self, audio: AudioState | None) -> None:
        if audio is None:
            self.audio_label.setText("")
        elif audio.paused_remaining_s is not None:
            self.audio_label.setText(f"Audio paused {clock(audio.paused_remaining_s)}")
        elif audio.pattern is None and self._alarms:
            self.audio_label.setText("Audio silenced")
        else:
            self.audio_label.setText("")

    # --------------------------------------------------------------- colour
    def background(self) -> str:
        """Current background colour ("#rrggbb")."""
        if self._priority is None:
            return _IDLE_BG
        bg, _ = severity_colors(self._priority)
        if self._flashing and self.flasher is not None and not self.flasher.is_on(self._priority):
            return dim(bg)
        return bg

    def _on_flash(self, severity: str) -> None:
        if self._flashing and severity == self._priority:
            self._apply_style()

    def _apply_style(self) -> None:
        bg = self.background()
        _, fg = severity_colors(self._priority) if self._priority else ("", "#ffffff")
        if bg != (severity_colors(self._priority)[0] if self._priority else _IDLE_BG):
            fg = "#ffffff"  # dark phase of a flash
        style = (
            f"QFrame#alarmBanner {{ background: {bg}; border-radius: 4px; }}"
            f"QLabel {{ color: {fg}; background: transparent; }}"
            "QLabel#bannerPriority { font-size: 15pt; font-weight: bold; }"
            "QLabel#bannerMessage { font-size: 12pt; font-weight: bold; }"
            "QLabel#bannerNote { font-style: italic; }"
            "QListWidget#bannerList { background: #263238; color: #ffffff; border: none; }"
        )
        if style != self._style:
            self._style = style
            self.setStyleSheet(style)
