"""Sessions in the window (offscreen): record a session on the simulator
into a real database in tmp_path, see its summary and export it, find it in
the sessions list and review it with the replay timeline."""

from __future__ import annotations

import json

import pytest
from PySide6 import QtGui, QtWidgets

from firmware_bridge import conditions as C
from monitor.gui.main_window import MainWindow
from monitor.gui.tiles import clock
from monitor.store import Store

pytestmark = pytest.mark.gui

WAIT_MS = 15000


def _device_t(win: MainWindow) -> float:
    snap = win.pipeline.snapshot() if win.pipeline is not None else None
    return snap.t if snap is not None and snap.t is not None else -1.0


def test_record_summarise_export_list_and_replay_a_session(qtbot, make_window, tmp_path):
    win = make_window()
    # Cup 2's pump sticks on at 8 s: an over-suction alarm to record and review.
    win.connect_url("sim://over_suction?cups=2&speed=8&fault_at_s=8")
    qtbot.waitUntil(lambda: _device_t(win) > 1.0, timeout=WAIT_MS)
    assert win.controls.record_button.isEnabled()
    assert win.start_recording(therapist="AB", patient="P-0042", notes="test run")
    qtbot.waitUntil(lambda: win.recording_state == "recording", timeout=WAIT_MS)
    assert win.controls.record_button.text().startswith("■ Stop recording")
    sid = win.recording_id
    qtbot.waitUntil(lambda: any(a.condition == C.OVER_SUCTION
                                for a in win.pipeline.snapshot().alarms), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: _device_t(win) > 16.0, timeout=WAIT_MS)
    win.controls.record_button.click()                         # stop
    qtbot.waitUntil(lambda: win.summary_dialog is not None and win.recording_state == "idle",
                    timeout=WAIT_MS)
    dlg = win.summary_dialog
    assert dlg.session_id == sid and "P-0042" in dlg.header.text()
    assert dlg.table.rowCount() == 2
    assert [dlg.table.item(r, 0).text() for r in range(2)] == ["1", "2"]
    in_target = dlg.table.item(0, 2).text()
    assert in_target.endswith(")") and "%" in in_target       # "97% (0:12)"
    assert dlg.table.item(1, 5).text().endswith("kPa")        # cup 2's max, in the unit
    assert float(dlg.table.item(1, 5).text().split()[0]) > 26.0

    # Export through the dialog: the files `cupmon sessions export` writes.
    dlg.export("csv", tmp_path / "s.csv")
    dlg.export("json", tmp_path / "s.json")
    qtbot.waitUntil(lambda: win.io.pending == 0 and "Exported" in dlg.result_label.text(),
                    timeout=WAIT_MS)
    assert (tmp_path / "s.csv").read_text().splitlines()[0].startswith("t_s,cup1_kpa,cup2_kpa")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["session"]["patient"] == "P-0042" and doc["session"]["status"] == "completed"
    assert {"1", "2"} <= set(doc["summaries"])
    assert any(e["condition"] == "over_suction" for e in doc["events"])
    with Store(tmp_path / "sessions.db", create=False) as store:
        stored = store.events(sid)
    assert any(e["condition"] == "over_suction" and e["event"] == "raised" for e in stored)

    # The sessions list (read on a worker) shows it.
    win.tabs.setCurrentWidget(win.sessions)
    qtbot.waitUntil(lambda: win.sessions.ids() == [sid], timeout=WAIT_MS)
    row = [win.sessions.table.item(0, c).text() for c in range(win.sessions.table.columnCount())]
    assert row[0] == str(sid) and row[3] == "completed" and row[6] == "P-0042"

    # Review it: the same window plays it, with the recorded alarm log.
    assert win.sessions.select(sid)
    win.sessions.open_button.click()
    qtbot.waitUntil(lambda: win.replay is not None and win.source is not None, timeout=WAIT_MS)
    assert win.replay_bar.isVisible() and win.tabs.currentWidget() is win.monitor_page
    assert win.replay_bar.speed == 1.0                         # real time by default
    assert len(win.alarm_log.model.rows()) == len(stored)
    assert any(r[2] == "over-suction" and r[4] == "raised" for r in win.alarm_log.model.rows())
    c = win.controls
    assert not c.vent_button.isEnabled() and "replay" in c.vent_button.toolTip()
    assert not c.release_button.isEnabled() and "replay" in c.release_button.toolTip()
    assert not c.record_button.isEnabled()
    qtbot.waitUntil(lambda: len(win.tiles.tiles) == 2
                    and win.tiles.tiles[0].value_label.text().replace(".", "").isdigit(),
                    timeout=WAIT_MS)
    win.replay_bar.speed_box.setCurrentIndex(win.replay_bar.speed_box.findText("max"))
    qtbot.waitUntil(lambda: win.replay.ended, timeout=WAIT_MS)   # played to its end
    r = win.replay
    assert win.replay_bar.play_button.text() == "Play again"
    # Every listener gets every sample (replay backpressure), the display too.
    qtbot.waitUntil(lambda: abs(win.buffer.span()[1] - r.t1) < 0.02, timeout=WAIT_MS)
    length = clock(r.t1 - r.t0)
    assert win.replay_bar.time_label.text() == f"{length} / {length}"

    # Seek: the traces hold the window up to the chosen time, then it plays on.
    win.set_replay_speed(1.0)
    target = r.t0 + 0.5 * (r.t1 - r.t0)
    win.replay_bar.timeline.seekRequested.emit(target)
    qtbot.waitUntil(lambda: win.source is not None and win.buffer.span() is not None
                    and win.buffer.span()[1] >= target, timeout=WAIT_MS)
    span = win.buffer.span()
    assert span[0] >= target - win.traces.window_s - 0.05      # the pre-roll, not the start
    assert span[0] < target - 1.0
    assert win.replay.playing and not win.replay.ended
    # Pause keeps the view; Close leaves the review.
    win.replay_bar.play_button.click()
    assert not win.replay.playing and win.source is None
    shown = [t.value_label.text() for t in win.tiles.tiles]
    qtbot.wait(300)           # longer than the 0.25 s after which live data counts as lost
    win.tick()
    assert [t.value_label.text() for t in win.tiles.tiles] == shown   # frozen, not "No signal"
    win.replay_bar.close_button.click()
    assert win.replay is None and not win.replay_bar.isVisible()
    assert win.alarm_log.model.rows() == []


def test_session_database_problems_are_one_line_messages(qtbot, make_window, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database\n")
    win = make_window(db_path=bad)
    win.connect_url("sim://normal?cups=1&speed=4")
    qtbot.waitUntil(lambda: _device_t(win) > 0.5, timeout=WAIT_MS)
    win.controls.record_button.click()                     # asks for the labels first
    dlg = win.session_dialog
    assert dlg is not None and dlg.isVisible() and win.recording_state == "idle"
    assert any(str(bad) in label.text() for label in dlg.findChildren(QtWidgets.QLabel))
    dlg.patient_edit.setText("P-1")
    dlg.accept()                                           # "Start recording"
    assert win.recording_state == "starting"
    qtbot.waitUntil(lambda: win.recording_state == "idle", timeout=WAIT_MS)
    text = win.controls.status_label.text()
    assert text.startswith("Recording not started:") and "not a cupmon database" in text
    assert "Traceback" not in text and "\n" not in text
    assert bad.read_text() == "not a database\n"              # left untouched
    win.tabs.setCurrentWidget(win.sessions)
    qtbot.waitUntil(lambda: "not a cupmon database" in win.sessions.message.text(),
                    timeout=WAIT_MS)
    win.open_session(3)
    qtbot.waitUntil(lambda: "not a cupmon database" in win.connection.error_text,
                    timeout=WAIT_MS)
    assert win.replay is None


def test_a_screenshot_of_a_stored_session_shows_its_review(qtbot, tmp_path):
    from test_store_helpers import wire_blocks

    from firmware_bridge.messages import DeviceInfo
    from monitor.gui.app import render_screenshot

    db = tmp_path / "s.db"
    with Store(db) as store:
        sid = store.create_session(source="test", patient="P-9",
                                   info=DeviceInfo("SIM-1", (1, 0, 0), 4, 1000))
        store.add_blocks(sid, wire_blocks(40, size=50))        # 2 s at 1 kHz
        store.end_session(sid)
    out = render_screenshot(None, tmp_path / "r.png", 0.3, db_path=db, session=sid,
                            speed=None)
    img = QtGui.QImage(str(out))
    assert (img.width(), img.height()) == (1366, 768)
    # The replay bar's dark blue-grey strip is in the picture.
    bar = QtGui.QColor("#1c313a").rgb()
    assert sum(img.pixel(x, y) == bar for x in range(0, 1366, 7) for y in range(0, 768, 3)) > 50
