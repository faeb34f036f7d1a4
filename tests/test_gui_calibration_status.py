"""The window applies the calibration in force on connect and shows which."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from monitor.gui.main_window import MainWindow  # noqa: E402
from monitor.store import Store  # noqa: E402


def test_device_panel_says_missing_then_in_force(qtbot, tmp_path):
    db = tmp_path / "s.db"
    win = MainWindow(db_path=db, persist=False, audio=False, extra_tabs=False)
    qtbot.addWidget(win)
    win.connect_url("sim://normal?cups=2&rate=50&speed=5&seed=3")
    qtbot.waitUntil(lambda: win._cal_status is not None, timeout=20000)
    assert "missing (cups 1, 2)" in win.calibration_summary()
    win.disconnect_source()

    serial = win._cal_status.device_serial
    store = Store(db)
    store.add_calibration(serial, 1, (0.5, 1.0, 0.0), technician="T", result="PASS",
                          valid=True, due_wall=4102444800.0)  # due 2100-01-01
    store.close()
    win.connect_url("sim://normal?cups=2&rate=50&speed=5&seed=3")
    qtbot.waitUntil(lambda: win._cal_status is not None, timeout=20000)
    summary = win.calibration_summary()
    assert "in force (cups 1)" in summary and "missing (cups 2)" in summary
    win._show_device()
    assert win.device_panel.text("calibration").endswith(f"records: {summary}")
    win.disconnect_source()
