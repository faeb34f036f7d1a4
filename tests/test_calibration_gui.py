"""The Technician tab drives the same calibration and pump-test code off the
GUI thread: a full calibration on the simulator, manual entry answered in the
tab, and the tab in the main window."""

import json
import threading
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6 import QtCore  # noqa: E402

from monitor.gui.technician_tab import TechnicianTab  # noqa: E402
from monitor.store import Store  # noqa: E402

URL = "sim://calibration_rig?cups=2&speed=40&seed=3&sensor_offset_kpa=1.2&sensor_gain=1.05"


@pytest.fixture
def tab(qtbot, tmp_path):
    t = TechnicianTab(db=tmp_path / "cupmon.db", report_dir=tmp_path / "certs")
    qtbot.addWidget(t)
    yield t
    t.shutdown()


def test_calibration_runs_on_a_worker_and_the_gui_stays_live(qtbot, tab, tmp_path):
    tab.url.setText(URL)
    tab.settle_time.setValue(1.0)
    tab.technician.setText("G. Tech")
    ticks = []
    timer_thread = []

    def tick():
        ticks.append(tab.busy)
        timer_thread.append(threading.current_thread())

    timer = QtCore.QTimer()
    timer.timeout.connect(tick)
    timer.start(20)
    with qtbot.waitSignal(tab.jobFinished, timeout=60000) as blocker:
        qtbot.mouseClick(tab.calibrate_button, QtCore.Qt.MouseButton.LeftButton)
        assert tab.busy and not tab.calibrate_button.isEnabled() and tab.abort_button.isEnabled()
        assert tab.worker is not threading.current_thread()
    timer.stop()
    res = blocker.args[0]
    assert res["kind"] == "calibrate" and res["result"] == "PASS" and not res.get("error")
    # the GUI thread kept its event loop running while the calibration worked
    assert sum(ticks) >= 5 and set(timer_thread) == {threading.main_thread()}
    run = res["run"]
    for r in run.results:
        assert not r.as_found.passed and r.as_left.passed and r.as_left.max_abs_error_kpa <= 0.1
    assert "PASS" in tab.result.text() and tab.instruction.text() == "Done."
    assert "Point 13 falling" in tab.log.toPlainText()
    assert Path(res["paths"]["pdf"]).exists() and Path(res["paths"]["html"]).exists()
    doc = json.loads(Path(res["paths"]["json"]).read_text())
    assert doc["technician"] == "G. Tech" and doc["result"] == "PASS"
    with Store(tmp_path / "cupmon.db") as s:
        assert [c["valid"] for c in s.list_calibrations("SIM-00000003")] == [True, True]
    assert tab.calibrate_button.isEnabled() and not tab.abort_button.isEnabled()


def test_manual_entry_is_asked_and_answered_in_the_tab(qtbot, tab):
    tab.url.setText(URL)
    tab.settle_time.setValue(1.0)
    tab.reference.setCurrentIndex(tab.reference.findData("manual"))
    tab.points.setText("0,10")
    assert tab.start("calibrate")
    qtbot.waitUntil(tab.answer.isEnabled, timeout=30000)
    assert "Point 1/3" in tab.instruction.text() and "nominal 0 kPa" in tab.instruction.text()
    qtbot.keyClicks(tab.answer, "0.0")
    qtbot.mouseClick(tab.answer_button, QtCore.Qt.MouseButton.LeftButton)
    assert not tab.answer.isEnabled()
    qtbot.waitUntil(lambda: tab.answer.isEnabled() and "Point 2/3" in tab.instruction.text(),
                    timeout=30000)
    with qtbot.waitSignal(tab.jobFinished, timeout=30000) as blocker:
        tab.abort()
    res = blocker.args[0]
    assert res["aborted"] and res["result"] == "FAIL"
    run = res["run"]
    assert [(p.cup, p.index, p.reference_kpa) for p in run.points] == [(1, 1, 0.0), (2, 1, 0.0)]
    assert "aborted" in tab.result.text() and "> 0.0" in tab.log.toPlainText()


def test_settings_are_checked_before_anything_starts(qtbot, tab):
    tab.url.setText("/dev/ttyACM0")
    assert not tab.start("calibrate")       # simulator reference without a simulator
    assert "sim://" in tab.result.text() and not tab.busy
    tab.url.setText(URL)
    tab.points.setText("5")
    assert not tab.start("calibrate") and "at least 2" in tab.result.text()


def test_a_device_that_cannot_be_opened_is_one_line(qtbot, tab, tmp_path):
    tab.url.setText(str(tmp_path / "ttyNOPE"))
    tab.reference.setCurrentIndex(tab.reference.findData("manual"))
    with qtbot.waitSignal(tab.jobFinished, timeout=30000) as blocker:
        assert tab.start("zero")
    err = blocker.args[0]["error"]
    assert "ttyNOPE" in err and "\n" not in err and "failed" in tab.result.text()


def test_the_main_window_gets_the_tab(qtbot, tmp_path):
    from monitor.gui.main_window import MainWindow

    settings = QtCore.QSettings(str(tmp_path / "w.ini"), QtCore.QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, audio=False, db_path=tmp_path / "w.db")
    qtbot.addWidget(win)
    titles = [win.tabs.tabText(i) for i in range(win.tabs.count())]
    assert "Technician" in titles
    assert win.technician_tab.db == tmp_path / "w.db"
    win.set_db_path(tmp_path / "other.db")
    assert win.technician_tab.db == tmp_path / "other.db"
