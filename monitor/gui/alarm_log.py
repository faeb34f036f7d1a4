"""The alarm log: every alarm event (raised, cleared, acknowledged, audio
paused), newest first, with its time, cup, condition, priority and message.

Live, the rows come from the pipeline's event sink (a queue the window
drains on its tick); in a replay they are the session's recorded events,
read from the database. Acknowledge and audio pause stay on the banner.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from monitor.alarm_text import LABELS

from .style import severity_colors

COLUMNS = ("Time", "Cup", "Condition", "Priority", "Event", "Message")
#: Rows kept (newest); a day of alarms is far below this.
MAX_ROWS = 20000
_EVENT_WORDS = {"raised": "raised", "cleared": "cleared", "acknowledged": "acknowledged",
                "audio_paused": "audio paused"}


def event_time(ev: Mapping[str, Any]) -> str:
    """Local wall-clock time of an event ("14:03:27"), else its device time."""
    wall = ev.get("wall")
    if isinstance(wall, str) and wall:
        try:
            return _dt.datetime.fromisoformat(wall).astimezone().strftime("%H:%M:%S")
        except ValueError:
            pass
    elif isinstance(wall, int | float):
        return _dt.datetime.fromtimestamp(wall).strftime("%H:%M:%S")
    t = ev.get("t")
    return f"t={t:.1f} s" if isinstance(t, int | float) else "–"


def _row(ev: Mapping[str, Any]) -> tuple[str, ...]:
    cup = ev.get("cup")
    cond = ev.get("condition")
    return (event_time(ev), "device" if cup is None else str(cup),
            "–" if not cond else LABELS.get(cond, str(cond)),
            str(ev.get("priority") or "–"),
            _EVENT_WORDS.get(str(ev.get("event")), str(ev.get("event") or "–")),
            str(ev.get("message") or ""))


class AlarmLogModel(QtCore.QAbstractTableModel):
    """Events as rows, newest first (index 0)."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._events: list[dict[str, Any]] = []   # newest first
        self._rows: list[tuple[str, ...]] = []

    # Qt model API
    def rowCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: QtCore.Qt.Orientation,
                   role: int = QtCore.Qt.ItemDataRole.DisplayRole) -> Any:
        if (orientation == QtCore.Qt.Orientation.Horizontal
                and role == QtCore.Qt.ItemDataRole.DisplayRole):
            return COLUMNS[section]
        return None

    def data(self, index: QtCore.QModelIndex, role: int = QtCore.Qt.ItemDataRole.DisplayRole
             ) -> Any:
        if not index.isValid():
            return None
        r, c = index.row(), index.column()
        if role == QtCore.Qt.ItemDataRole.DisplayRole:
            return self._rows[r][c]
        ev = self._events[r]
        if role == QtCore.Qt.ItemDataRole.ToolTipRole:
            t = ev.get("t")
            where = f"device time {t:.3f} s" if isinstance(t, int | float) else ""
            return f"{ev.get('wall') or ''} {where}\n{ev.get('message') or ''}".strip()
        if c == 3 and ev.get("event") == "raised" and ev.get("priority") in ("high", "medium",
                                                                             "low"):
            bg, fg = severity_colors(str(ev["priority"]))
            if role == QtCore.Qt.ItemDataRole.BackgroundRole:
                return QtGui.QBrush(QtGui.QColor(bg))
            if role == QtCore.Qt.ItemDataRole.ForegroundRole:
                return QtGui.QBrush(QtGui.QColor(fg))
        return None

    # ours
    def set_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Replace every row (events oldest first, as recorded)."""
        evs = [dict(e) for e in events][-MAX_ROWS:]
        evs.reverse()
        self.beginResetModel()
        self._events = evs
        self._rows = [_row(e) for e in evs]
        self.endResetModel()

    def add_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Add newer events (oldest first) at the top."""
        evs = [dict(e) for e in events]
        if not evs:
            return
        evs.reverse()
        self.beginInsertRows(QtCore.QModelIndex(), 0, len(evs) - 1)
        self._events[:0] = evs
        self._rows[:0] = [_row(e) for e in evs]
        self.endInsertRows()
        if len(self._rows) > MAX_ROWS:
            self.beginRemoveRows(QtCore.QModelIndex(), MAX_ROWS, len(self._rows) - 1)
            del self._events[MAX_ROWS:]
            del self._rows[MAX_ROWS:]
            self.endRemoveRows()

    def event_at(self, row: int) -> dict[str, Any]:
        return self._events[row]

    def rows(self) -> list[tuple[str, ...]]:
        """The table as text, newest first (for tests)."""
        return list(self._rows)


class AlarmLogPane(QtWidgets.QWidget):
    """The table and a one-line header saying where the events come from.
    Double-clicking a row emits ``eventActivated(device t)`` (a replay jumps
    there)."""

    eventActivated = QtCore.Signal(float)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = AlarmLogModel(self)
        self.title = QtWidgets.QLabel("Alarm events of this connection, newest first.")
        self.table = QtWidgets.QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        self.table.setAlternatingRowColors(True)
        head = self.table.horizontalHeader()
        for i, w in enumerate((80, 56, 110, 70, 100)):
            self.table.setColumnWidth(i, w)
        head.setStretchLastSection(True)
        self.table.doubleClicked.connect(self._activated)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.title)
        lay.addWidget(self.table, 1)

    def set_title(self, text: str) -> None:
        self.title.setText(text)

    def _activated(self, index: QtCore.QModelIndex) -> None:
        t = self.model.event_at(index.row()).get("t")
        if isinstance(t, int | float):
            self.eventActivated.emit(float(t))
