"""Shared test set-up: Qt always offscreen, never a real display; the real
window for GUI tests."""

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def settings(tmp_path):
    """Window choices persist to a file of the test's own, never the user's."""
    from PySide6 import QtCore

    return QtCore.QSettings(str(tmp_path / "cupmon.ini"), QtCore.QSettings.Format.IniFormat)


@pytest.fixture
def make_window(qtbot, settings, tmp_path):
    """Make cupmon's real window (offscreen, 1366x768, no audio, sessions in
    the test's own database); keyword arguments go to MainWindow. All are
    closed at the end of the test."""
    from monitor.gui.main_window import MainWindow

    made = []

    def make(**kw) -> MainWindow:
        kw.setdefault("settings", settings)
        kw.setdefault("audio", False)
        kw.setdefault("db_path", tmp_path / "sessions.db")
        win = MainWindow(**kw)
        qtbot.addWidget(win)
        win.resize(1366, 768)
        win.show()
        made.append(win)
        return win

    yield make
    for w in made:
        w.close()
