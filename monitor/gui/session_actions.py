"""Recording sessions and the session database, as the window does them
(a part of :class:`~monitor.gui.main_window.MainWindow`, kept apart for size).

Every database read and write runs on the window's workers
(``window.io``; ``window.rec_io``, one thread, for the start and stop of a
recording so they never overlap); results come back on the GUI thread.
docs/gui.md, "Sessions".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6 import QtWidgets

from monitor.errors import user_message

from .review import is_replay_source
from .sessions import SessionDialog, SummaryDialog, export_session

RECORD_KEY = "Ctrl+R"


class SessionActions:
    """Record / stop / summary / sessions list / export (mixed into MainWindow)."""

    # ------------------------------------------------------------ recording
    def toggle_recording(self) -> None:
        """Record button / Ctrl+R: ask for the labels and start, or stop."""
        if self.recording_state in ("recording", "starting"):
            self.stop_recording()
            return
        if self.recording_state != "idle":
            return
        why = self.recording_block_reason()
        if why:
            self.controls.show_status(f"Cannot record: {why}", "bad")
            return
        if self.session_dialog is not None and self.session_dialog.isVisible():
            self.session_dialog.raise_()
            return
        given = self.session_defaults   # --therapist/--patient/--notes on the command line
        dlg = SessionDialog(self, therapist=given.get("therapist") or str(
                                self.settings.value("sessions/therapist", "")),
                            patient=given.get("patient", ""), notes=given.get("notes", ""),
                            db=str(self.db_path))
        self.session_dialog = dlg

        def accepted() -> None:
            fields = dlg.fields()
            if self.persist:
                self.settings.setValue("sessions/therapist", fields["therapist"])
            self.start_recording(**fields)

        dlg.accepted.connect(accepted)
        dlg.open()   # window-modal, never blocks the monitor

    def recording_block_reason(self) -> str:
        if self.replay is not None or is_replay_source(self.source):
            return "a replay is already a recording"
        if self.source is None:
            return "connect to a device first"
        return ""

    def start_recording(self, therapist: str = "", patient: str = "", notes: str = "") -> bool:
        """Record the running source into the session database from now on,
        with these labels. The database is opened on a worker; the therapy
        statistics (tiles' time in band, the summary) restart with the session.
        Returns False when nothing could be started."""
        from monitor.recorder import Recorder

        why = self.recording_block_reason()
        if why or self.recorder is not None or self.pipeline is None:
            self.controls.show_status(f"Cannot record: {why or 'already recording'}", "bad")
            return False
        source, pipeline = self.source, self.pipeline
        assert source is not None
        # The pipeline's own snapshot if the tick has not shown one yet: a
        # session must start with the bands it is checked against.
        snap = self._snapshot if self._snapshot is not None else pipeline.snapshot()
        targets = ({str(c.cup): [c.band[0], c.band[1]] for c in snap.cups}
                   if snap is not None and snap.cups else None)
        rec = Recorder(self.db_path, source=self.source_label, therapist=therapist,
                       patient=patient, notes=notes, targets=targets, info=self._info)
        self.recorder, self.recording_state = rec, "starting"
        self._rec_links = (source, pipeline)
        self._update_recording_button()

        def work() -> int:
            sid = rec.start_session()         # opens the database: StoreError is one line
            pipeline.reset_stats()
            pipeline.add_event_sink(rec.record_event)
            pipeline.add_band_sink(rec.record_band_change)   # a band set while recording
            source.add_listener(rec)
            return sid

        def done(sid: int | None, exc: BaseException | None) -> None:
            if exc is not None:
                msg = user_message(exc)
                self.recorder, self.recording_state, self._rec_links = None, "idle", None
                self.controls.show_status(f"Recording not started: {msg}", "bad")
                self.statusBar().showMessage(f"Recording not started: {msg}")
                self._update_recording_button()
                return
            self.recording_id, self._rec_t0 = sid, time.monotonic()
            if self.recorder is rec and self.recording_state == "starting":
                self.recording_state = "recording"
                self.controls.show_status(f"Recording session {sid} into {self.db_path}", "ok")
                self.recordingChanged.emit(sid)
            self._update_recording_button()

        self.rec_io.submit(work, done)
        return True

    def stop_recording(self, show_summary: bool = True) -> None:
        """End the recording: store the summary, complete the session (on a
        worker), then show the summary dialog."""
        rec, links = self.recorder, self._rec_links
        if rec is None or links is None or self.recording_state == "stopping":
            return
        self.recording_state = "stopping"
        self._update_recording_button()
        source, pipeline = links

        def work() -> tuple[dict, dict]:
            if rec.session_id is None and rec.error is None:
                rec.start_session()   # still opening: wait for it, then end it cleanly
            sid = rec.session_id
            if sid is None:
                raise rec.error or RuntimeError("the recording never started")
            pipeline.remove_event_sink(rec.record_event)
            pipeline.remove_band_sink(rec.record_band_change)
            rec.set_summary(pipeline.stats_summary())
            source.remove_listener(rec)   # -> rec.stop(): everything stored, completed
            rec.stop()
            from monitor.store import Store

            with Store(rec.path, create=False) as store:
                return store.get_session(sid), store.summaries(sid)

        def done(res: tuple[dict, dict] | None, exc: BaseException | None) -> None:
            if self.recorder is rec:
                self.recorder, self.recording_state, self._rec_links = None, "idle", None
                self.recording_id = None
            self.recordingChanged.emit(None)
            self._update_recording_button()
            if exc is not None:
                msg = user_message(exc)
                self.controls.show_status(f"Recording ended with a problem: {msg}", "bad")
                return
            assert res is not None
            session, summaries = res
            self.controls.show_status(f"Session {session['id']} recorded.", "ok")
            self.statusBar().showMessage(f"Session {session['id']} recorded in {self.db_path}.")
            if show_summary:
                self.show_summary(session, summaries)
            self.refresh_sessions()

        self.rec_io.submit(work, done)

    def _update_recording_button(self) -> None:
        state = self.recording_state
        why = self.recording_block_reason()
        if state == "idle":
            text, tip, enabled = "idle", f"Not available: {why}" if why else (
                f"Record a session into {self.db_path} [{RECORD_KEY}]"), not why
        elif state == "starting":
            text, tip, enabled = "starting", "Opening the session database…", True
        elif state == "stopping":
            text, tip, enabled = "stopping", "Storing the session…", False
        else:
            secs = int(time.monotonic() - self._rec_t0)
            text, tip, enabled = f"rec {secs}", (f"Recording session {self.recording_id} into "
                                                 f"{self.db_path}; press to stop"), True
        key = f"{text}|{tip}|{enabled}"
        if key == self._rec_button_text:
            return
        self._rec_button_text = key
        recording = state in ("recording", "starting", "stopping")
        elapsed = time.monotonic() - self._rec_t0 if state == "recording" else 0.0
        self.controls.set_recording(recording, elapsed, enabled=enabled, tooltip=tip)
        if state == "stopping":
            self.controls.record_button.setText("Storing the session…")

    def show_summary(self, session: dict[str, Any], summaries: dict[int, dict]) -> SummaryDialog:
        """The summary dialog of a session (non-blocking), with Export."""
        if self.summary_dialog is not None:
            self.summary_dialog.close()
        dlg = SummaryDialog(session, summaries, self.unit, self)
        sid = int(session["id"])
        dlg.exportRequested.connect(
            lambda kind, path: self.export_session(sid, kind, path, dialog=dlg))
        self.summary_dialog = dlg
        dlg.show()
        return dlg

    # ------------------------------------------------------------- sessions
    def set_db_path(self, path: str | Path) -> None:
        """Use another session database (remembered in the settings)."""
        self.db_path = Path(path)
        self.sessions.set_database(self.db_path)
        if self.persist:
            self.settings.setValue("sessions/db", str(self.db_path))
        self._rec_button_text = ""
        self._update_recording_button()
        self.refresh_sessions()

    def choose_database(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Session database", str(self.db_path), "cupmon database (*.db);;All files (*)",
            options=QtWidgets.QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.set_db_path(path)

    def refresh_sessions(self) -> None:
        """Re-read the sessions list (on a worker)."""
        db = self.db_path

        def work() -> list[dict[str, Any]] | None:
            if not db.exists():
                return None
            from monitor.store import Store

            with Store(db, create=False) as store:
                return store.list_sessions()

        def done(rows: list[dict[str, Any]] | None, exc: BaseException | None) -> None:
            if db != self.db_path:
                return
            if exc is not None:
                self.sessions.set_sessions([])
                self.sessions.show_message(user_message(exc), bad=True)
            elif rows is None:
                self.sessions.set_sessions([])
                self.sessions.show_message(f"No sessions recorded yet (no database at {db}).")
            else:
                self.sessions.set_sessions(rows)
                self.sessions.show_message(
                    f"{len(rows)} session{'s' if len(rows) != 1 else ''}, newest first. "
                    "Double-click one to review it." if rows else "No sessions recorded yet.")

        self.sessions.show_message("Reading the sessions…")
        self.io.submit(work, done)

    def show_session_summary(self, session_id: int) -> None:
        db = self.db_path

        def work() -> tuple[dict, dict]:
            from monitor.store import Store

            with Store(db, create=False) as store:
                return store.get_session(session_id), store.summaries(session_id)

        def done(res: tuple[dict, dict] | None, exc: BaseException | None) -> None:
            if exc is not None:
                self.sessions.show_message(user_message(exc), bad=True)
            elif res is not None:
                self.show_summary(*res)

        self.io.submit(work, done)

    def _ask_export(self, session_id: int, kind: str) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, f"Export session {session_id} as {kind.upper()}",
            str(Path.home() / f"session-{session_id}.{kind}"), f"{kind.upper()} files (*.{kind})")
        if path:
            self.export_session(session_id, kind, path)

    def export_session(self, session_id: int, kind: str, path: str | Path,
                       dialog: SummaryDialog | None = None) -> None:
        """Write a session as CSV or JSON (``cupmon sessions export``'s files)
        on a worker; the outcome shows in the dialog or the sessions tab."""
        db = self.db_path
        kw = {kind: path}

        def done(files: list[str] | None, exc: BaseException | None) -> None:
            ok = exc is None
            text = (f"Exported session {session_id} to {path}" if ok
                    else f"Export failed: {user_message(exc)}")  # type: ignore[arg-type]
            if dialog is not None:
                dialog.show_export_result(text, ok)
            self.sessions.show_message(text, bad=not ok)
            self.statusBar().showMessage(text, 30000)

        self.io.submit(lambda: export_session(db, session_id, **kw), done)

