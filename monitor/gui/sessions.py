"""Sessions in the window: the start dialog (therapist, patient, notes), the
summary dialog at the end (per cup: time in target, mean, max, excursions,
time applied) with Export, and the sessions list that opens a recorded
session for review.

Nothing here touches the database: the window reads and writes it on a
worker (:class:`~monitor.gui.worker.AsyncRunner`) and hands the results in.
Exports reuse ``monitor.sessions_cli`` (same CSV/JSON files as
``cupmon sessions export``, created 0600).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtWidgets

from monitor.units import format_pressure

from .tiles import clock

SESSION_COLUMNS = ("ID", "Started", "Duration", "Status", "Cups", "Rate", "Patient",
                   "Therapist", "Events", "Source")
SUMMARY_COLUMNS = ("Cup", "Applied", "In target", "Mean", "Min", "Max", "Excursions")


def when(wall: float | None) -> str:
    """Unix time -> "2025-01-01 10:00" local ("–" for None)."""
    return "–" if wall is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(wall))


def session_duration(s: Mapping[str, Any]) -> float | None:
    """Wall-clock length of a session row (to its end or last heartbeat), s."""
    end = s.get("ended_wall") if s.get("ended_wall") is not None else s.get("heartbeat_wall")
    start = s.get("started_wall")
    return None if end is None or start is None else max(0.0, float(end) - float(start))


def export_session(db: str | Path, session_id: int, *, csv: str | Path | None = None,
                   json: str | Path | None = None) -> list[str]:
    """Write a session's CSV (samples) and/or JSON (row, summaries, events)
    exactly as ``cupmon sessions export`` does. Runs on a worker thread.
    Returns the files written; raises StoreError/OSError (one line)."""
    from monitor import sessions_cli
    from monitor.store import Store

    with Store(db, create=False) as store:
        sessions_cli.export_session(store, int(session_id), csv, json)
    return [str(p) for p in (csv, json) if p is not None]


# --------------------------------------------------------------------------
# Start dialog
# --------------------------------------------------------------------------

class SessionDialog(QtWidgets.QDialog):
    """Therapist, patient (pseudonymous) and notes for a new recording."""

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, therapist: str = "",
                 patient: str = "", notes: str = "", db: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Record a session")
        self.therapist_edit = QtWidgets.QLineEdit(therapist)
        self.therapist_edit.setPlaceholderText("e.g. AB")
        self.patient_edit = QtWidgets.QLineEdit(patient)
        self.patient_edit.setPlaceholderText("pseudonymous label, e.g. P-0042 (not a name)")
        self.notes_edit = QtWidgets.QPlainTextEdit(notes)
        self.notes_edit.setPlaceholderText("cup sites, anything worth keeping")
        self.notes_edit.setFixedHeight(80)
        form = QtWidgets.QFormLayout()
        form.addRow("Therapist", self.therapist_edit)
        form.addRow("Patient", self.patient_edit)
        form.addRow("Notes", self.notes_edit)
        where = QtWidgets.QLabel(f"Recorded into {db}" if db else "")
        where.setWordWrap(True)
        where.setStyleSheet("color: #90a4ae;")
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok
            | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setText("Start recording")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(where)
        lay.addWidget(buttons)
        self.patient_edit.setFocus()

    def fields(self) -> dict[str, str]:
        return {"therapist": self.therapist_edit.text().strip(),
                "patient": self.patient_edit.text().strip(),
                "notes": self.notes_edit.toPlainText().strip()}


# --------------------------------------------------------------------------
# Summary dialog
# --------------------------------------------------------------------------

def summary_rows(summaries: Mapping[int, Mapping[str, Any]], unit: str) -> list[tuple[str, ...]]:
    """Per-cup rows of the summary table (display unit)."""
    rows = []
    for cup in sorted(c for c in summaries if int(c) > 0):
        s = summaries[cup]

        def p(key: str, _s: Mapping[str, Any] = s) -> str:
            v = _s.get(key)
            return format_pressure(v, unit) if isinstance(v, int | float) else "–"

        applied = s.get("time_applied_s")
        in_t, pct = s.get("time_in_target_s"), s.get("time_in_target_pct")
        target = "–"
        if isinstance(pct, int | float):
            target = f"{pct:.0f}%" + (f" ({clock(in_t)})" if isinstance(in_t, int | float) else "")
        exc, exc_t = s.get("excursions"), s.get("excursion_time_s")
        excursions = "–" if exc is None else str(exc)
        if exc and isinstance(exc_t, int | float):
            excursions += f" ({exc_t:.0f} s)"
        rows.append((str(cup), clock(applied) if isinstance(applied, int | float) else "–",
                     target, p("mean_kpa"), p("min_kpa"), p("max_kpa"), excursions))
    return rows


class SummaryDialog(QtWidgets.QDialog):
    """What a session achieved, per cup, with Export CSV / JSON.

    ``exportRequested(kind, path)`` (kind "csv" or "json") is emitted after
    the file name is chosen; the window writes it on a worker and reports
    back with :meth:`show_export_result`."""

    exportRequested = QtCore.Signal(str, str)

    def __init__(self, session: Mapping[str, Any], summaries: Mapping[int, Mapping[str, Any]],
                 unit: str = "kPa", parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = dict(session)
        self.session_id = int(session.get("id", 0))
        self.setWindowTitle(f"Session {self.session_id} – summary")
        self.setMinimumWidth(640)
        dur = (summaries.get(0) or {}).get("duration_s")
        if not isinstance(dur, int | float):
            dur = session_duration(session)
        who = ", ".join(x for x in (
            f"therapist {session.get('therapist')}" if session.get("therapist") else "",
            f"patient {session.get('patient')}" if session.get("patient") else "") if x)
        head = (f"Session {self.session_id} · {when(session.get('started_wall'))} · "
                f"{clock(dur) if dur is not None else '–'} · {session.get('status', '')}"
                + (f" · {who}" if who else ""))
        self.header = QtWidgets.QLabel(head)
        self.header.setStyleSheet("font-weight: bold; font-size: 11pt;")
        self.header.setWordWrap(True)
        notes = str(session.get("notes") or "")
        self.notes = QtWidgets.QLabel(f"Notes: {notes}" if notes else "")
        self.notes.setWordWrap(True)
        self.notes.setVisible(bool(notes))
        self.rows = summary_rows(summaries, unit)
        self.table = QtWidgets.QTableWidget(len(self.rows), len(SUMMARY_COLUMNS))
        self.table.setHorizontalHeaderLabels(SUMMARY_COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        for r, row in enumerate(self.rows):
            for c, text in enumerate(row):
                item = QtWidgets.QTableWidgetItem(text)
                item.setTextAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
                self.table.setItem(r, c, item)
        self.table.horizontalHeader().setSectionResizeMode(
            QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.empty = QtWidgets.QLabel("No per-cup summary was stored for this session.")
        self.empty.setVisible(not self.rows)
        note = QtWidgets.QLabel("In target: share of the regulated time (after pump-down) "
                                "within the band. Excursions: runs outside the band.")
        note.setWordWrap(True)
        note.setStyleSheet("color: #90a4ae;")
        self.result_label = QtWidgets.QLabel("")
        self.result_label.setWordWrap(True)
        self.csv_button = QtWidgets.QPushButton("Export CSV…")
        self.csv_button.setToolTip("Samples: device time, suction and status per cup")
        self.json_button = QtWidgets.QPushButton("Export JSON…")
        self.json_button.setToolTip("Session, per-cup summaries and alarm events")
        close = QtWidgets.QPushButton("Close")
        close.clicked.connect(self.accept)
        self.csv_button.clicked.connect(lambda: self._ask("csv"))
        self.json_button.clicked.connect(lambda: self._ask("json"))
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.csv_button)
        buttons.addWidget(self.json_button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.header)
        lay.addWidget(self.notes)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.empty)
        lay.addWidget(note)
        lay.addWidget(self.result_label)
        lay.addLayout(buttons)
        self.resize(720, 160 + 30 * max(1, len(self.rows)))

    def _ask(self, kind: str) -> None:
        default = f"session-{self.session_id}.{kind}"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, f"Export session {self.session_id} as {kind.upper()}",
            str(Path.home() / default), f"{kind.upper()} files (*.{kind})")
        if path:
            self.export(kind, path)

    def export(self, kind: str, path: str | Path) -> None:
        """Ask the window to write ``kind`` ("csv"/"json") to ``path``."""
        self.result_label.setText(f"Exporting {kind.upper()} to {path}…")
        self.exportRequested.emit(kind, str(path))

    def show_export_result(self, text: str, ok: bool) -> None:
        self.result_label.setText(text)
        self.result_label.setStyleSheet("" if ok else "color: #ef5350; font-weight: bold;")


# --------------------------------------------------------------------------
# Sessions list
# --------------------------------------------------------------------------

class SessionsPane(QtWidgets.QWidget):
    """The database's sessions, newest first; open one for review, see its
    summary, export it."""

    refreshRequested = QtCore.Signal()
    openRequested = QtCore.Signal(int)
    summaryRequested = QtCore.Signal(int)
    exportRequested = QtCore.Signal(int, str)     # id, "csv" | "json"
    databaseRequested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.sessions: list[dict[str, Any]] = []
        self.db_label = QtWidgets.QLabel("")
        self.db_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.db_button = QtWidgets.QPushButton("Database…")
        self.db_button.setToolTip("Choose the session database file")
        self.refresh_button = QtWidgets.QPushButton("Refresh")
        self.message = QtWidgets.QLabel("")
        self.message.setWordWrap(True)
        self.table = QtWidgets.QTableWidget(0, len(SESSION_COLUMNS))
        self.table.setHorizontalHeaderLabels(SESSION_COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setStretchLastSection(True)
        for i, w in enumerate((48, 130, 70, 90, 44, 60, 110, 90, 56)):
            self.table.setColumnWidth(i, w)
        self.open_button = QtWidgets.QPushButton("Replay")
        self.open_button.setToolTip("Review the session in the window, with a timeline "
                                    "(double-click a row does the same)")
        self.summary_button = QtWidgets.QPushButton("Summary…")
        self.csv_button = QtWidgets.QPushButton("Export CSV…")
        self.json_button = QtWidgets.QPushButton("Export JSON…")
        top = QtWidgets.QHBoxLayout()
        top.addWidget(QtWidgets.QLabel("Database:"))
        top.addWidget(self.db_label, 1)
        top.addWidget(self.db_button)
        top.addWidget(self.refresh_button)
        bottom = QtWidgets.QHBoxLayout()
        for b in (self.open_button, self.summary_button, self.csv_button, self.json_button):
            bottom.addWidget(b)
        bottom.addStretch(1)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.message)
        lay.addWidget(self.table, 1)
        lay.addLayout(bottom)

        self.refresh_button.clicked.connect(self.refreshRequested)
        self.db_button.clicked.connect(self.databaseRequested)
        self.table.doubleClicked.connect(lambda _i: self._emit(self.openRequested))
        self.open_button.clicked.connect(lambda: self._emit(self.openRequested))
        self.summary_button.clicked.connect(lambda: self._emit(self.summaryRequested))
        self.csv_button.clicked.connect(lambda: self._emit_export("csv"))
        self.json_button.clicked.connect(lambda: self._emit_export("json"))
        self.table.itemSelectionChanged.connect(self._sync_buttons)
        self._sync_buttons()

    def set_database(self, path: str | Path) -> None:
        self.db_label.setText(str(path))

    def show_message(self, text: str, bad: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet("color: #ef5350; font-weight: bold;" if bad else "")

    def set_sessions(self, sessions: list[dict[str, Any]]) -> None:
        """Fill the table (rows of ``Store.list_sessions()``), keeping the selection."""
        keep = self.selected_id()
        self.sessions = list(sessions)
        self.table.setRowCount(len(self.sessions))
        for r, s in enumerate(self.sessions):
            dur = session_duration(s)
            rate = s.get("rate_hz")
            cells = (str(s["id"]), when(s.get("started_wall")),
                     clock(dur) if dur is not None else "–", str(s.get("status") or ""),
                     str(s.get("cups") or "–"), f"{rate:g} Hz" if rate else "–",
                     str(s.get("patient") or ""), str(s.get("therapist") or ""),
                     str(s.get("events", "")), str(s.get("source") or ""))
            for c, text in enumerate(cells):
                item = QtWidgets.QTableWidgetItem(text)
                item.setData(QtCore.Qt.ItemDataRole.UserRole, int(s["id"]))
                if c == len(cells) - 1 or c == 9:
                    item.setToolTip(text)
                self.table.setItem(r, c, item)
        if keep is not None:
            self.select(keep)
        self._sync_buttons()

    def select(self, session_id: int) -> bool:
        for r, s in enumerate(self.sessions):
            if int(s["id"]) == int(session_id):
                self.table.selectRow(r)
                return True
        return False

    def selected_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return None if item is None else int(item.data(QtCore.Qt.ItemDataRole.UserRole))

    def ids(self) -> list[int]:
        return [int(s["id"]) for s in self.sessions]

    def _sync_buttons(self) -> None:
        have = self.selected_id() is not None
        for b in (self.open_button, self.summary_button, self.csv_button, self.json_button):
            b.setEnabled(have)

    def _emit(self, signal: QtCore.SignalInstance) -> None:
        sid = self.selected_id()
        if sid is not None:
            signal.emit(sid)

    def _emit_export(self, kind: str) -> None:
        sid = self.selected_id()
        if sid is not None:
            self.exportRequested.emit(sid, kind)
