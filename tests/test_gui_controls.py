"""Pump controls, alarms and signal loss through the real window, the real
SerialLink and pipeline, on the built-in simulator (``sim://``), offscreen.

Commands go out on a worker and their ACK/NACK comes back through a queued
signal: the tests follow every state a command passes through
(``CommandSender.changed``) and wait for what the tiles show.
"""

from __future__ import annotations

import pytest
from PySide6 import QtCore

from firmware_bridge import conditions as C
from monitor.gui.main_window import MainWindow
from monitor.gui.style import dim, severity_colors
from monitor.gui.tiles import NO_SIGNAL_TEXT

pytestmark = pytest.mark.gui

WAIT_MS = 10000


@pytest.fixture
def window(make_window):
    return make_window()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _states(win: MainWindow) -> list[str]:
    return [t.state_text for t in win.tiles.tiles]


def _connect(qtbot, win: MainWindow, url: str, cups: int, ready=("OK",)) -> None:
    """Connect to ``url`` and wait until every cup regulates in its band."""
    assert win.connect_url(url)
    qtbot.waitUntil(lambda: len(win.tiles.tiles) == cups
                    and all(s in ready for s in _states(win)), timeout=WAIT_MS)


class Seen:
    """Every text a command showed, in order (the window's command updates)."""

    def __init__(self, win: MainWindow) -> None:
        self.texts: list[str] = []
        win.commands.changed.connect(lambda rec: self.texts.append(rec.text))


def test_over_suction_raises_high_and_acknowledge_clears_the_latch(qtbot, window):
    win = window
    # Cup 2's pump driver sticks on at 6 s: suction climbs past 26 kPa (over
    # suction, high, latching) until the device's interlock vents the cup.
    assert win.connect_url("sim://over_suction?cups=2&speed=4&fault_at_s=6")
    qtbot.waitUntil(lambda: win.banner.priority == "high", timeout=WAIT_MS)
    over = [a for a in win.pipeline.snapshot().alarms if a.condition == C.OVER_SUCTION]
    assert over and over[0].cup == 2 and over[0].priority == "high"
    assert win.banner.message_label.text().startswith("Cup 2")
    red = severity_colors("high")[0]
    assert win.tiles.tiles[1].background() in (red, dim(red))      # red, flashing

    def latched() -> bool:   # the cause has ended, the alarm stays until acknowledged
        a = [a for a in win.pipeline.snapshot().alarms if a.condition == C.OVER_SUCTION]
        return bool(a) and not a[0].active
    qtbot.waitUntil(latched, timeout=WAIT_MS)
    # The device vented the cup at its hard limit: that alarm is present and
    # listed first, the over-suction one waits as "resolved".
    qtbot.waitUntil(lambda: _states(win)[1] == "Vented by safety limit", timeout=3000)
    qtbot.keyClick(win, QtCore.Qt.Key.Key_F2)                            # acknowledge
    qtbot.waitUntil(lambda: not any(a.condition == C.OVER_SUCTION
                                    for a in win.pipeline.snapshot().alarms), timeout=3000)
    assert not win.banner.flashing
    # The alarm log has the whole story, newest first.
    qtbot.waitUntil(lambda: any(r[4] == "acknowledged" for r in win.alarm_log.model.rows()),
                    timeout=3000)
    rows = [r for r in win.alarm_log.model.rows() if r[2] == "over-suction"]
    events = [r[4] for r in rows]
    assert events[-1] == "raised" and "cleared" in events and events[0] == "acknowledged"
    assert all(r[1] == "2" and r[3] == "high" for r in rows)
    assert win.tabs.tabText(win.tabs.indexOf(win.alarm_log)).startswith("Alarm log (")


def test_a_silent_simulator_shows_no_signal_then_values_again(qtbot, window):
    win = window
    # The device falls silent 3 s in, for 2 s of device time (1 s at speed 2).
    assert win.connect_url("sim://signal_loss?cups=2&speed=2&fault_at_s=3&gap_s=2")
    qtbot.waitUntil(lambda: len(win.tiles.tiles) == 2
                    and all(_is_number(t.value_label.text()) for t in win.tiles.tiles),
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: [t.value_label.text() for t in win.tiles.tiles]
                    == [NO_SIGNAL_TEXT] * 2, timeout=WAIT_MS)
    assert _states(win) == ["No signal", "No signal"]
    qtbot.waitUntil(lambda: win.banner.priority == "high", timeout=3000)   # signal loss
    assert any(a.condition == C.SIGNAL_LOSS for a in win.pipeline.snapshot().alarms)
    qtbot.waitUntil(lambda: all(_is_number(t.value_label.text()) for t in win.tiles.tiles),
                    timeout=WAIT_MS)                                    # data again


def test_vent_and_start_round_trip_show_sending_then_the_ack(qtbot, window):
    win = window
    _connect(qtbot, win, "sim://normal?cups=2&speed=4", 2)
    assert win.controls.command_reason == "" and win.controls.vent_button.isEnabled()
    seen = Seen(win)
    qtbot.mouseClick(win.tiles.tiles[0], QtCore.Qt.MouseButton.LeftButton)  # select cup 1
    assert win.controls.cup == 1 and win.tiles.tiles[0].selected
    qtbot.mouseClick(win.controls.vent_button, QtCore.Qt.MouseButton.LeftButton)
    assert seen.texts[0] == "Vent cup 1: sending…"          # shown before any answer
    qtbot.waitUntil(lambda: _states(win)[0] == "Released", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: seen.texts[-1] == "Vent cup 1: done", timeout=3000)
    assert win.tiles.tiles[0].command_label.text() in ("Vent: done", "Vent ✓")
    assert win.controls.status_label.text() == "Vent cup 1: done"
    assert _states(win)[1] == "OK"                          # the other cup goes on
    qtbot.mouseClick(win.controls.start_button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: seen.texts[-1] == "Start cup 1: done", timeout=3000)
    assert seen.texts[-2] == "Start cup 1: sending…"
    qtbot.waitUntil(lambda: _states(win)[0] in ("Pumping down", "OK"), timeout=WAIT_MS)


def test_a_band_follows_into_the_monitor_and_a_nack_shows_its_reason(qtbot, window):
    win = window
    # A device whose interlock trips at 28 kPa: it refuses bands above that.
    _connect(qtbot, win, "sim://normal?cups=2&speed=4&hard_limit_kpa=28", 2)
    c = win.controls
    c.select_cup(2)
    assert win.tiles.tiles[1].selected and not win.tiles.tiles[0].selected  # one outline
    c.set_band_values(21.0, 24.0)
    assert c.band_button.isEnabled()
    seen = Seen(win)
    qtbot.mouseClick(c.band_button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: seen.texts[-1].endswith("done"), timeout=3000)
    assert seen.texts == ["Band 21.0–24.0 kPa cup 2: sending…", "Band 21.0–24.0 kPa cup 2: done"]
    # The monitor checks cup 2 against the new band; cup 1 keeps its own.
    assert win.pipeline.config.cup(2).band_low_kpa == 21.0
    assert win.pipeline.config.cup(2).band_high_kpa == 24.0
    assert win.pipeline.config.cup(1).band_high_kpa == 25.0
    qtbot.waitUntil(lambda: win.tiles.tiles[1].band_label.text().startswith(
        ("Band 21.0–24.0", "21.0–24.0")), timeout=3000)
    assert win.traces.band(2) == (21.0, 24.0)

    # The form refuses what the monitor could not check: the over-suction
    # level (high + 1 kPa) must stay below the 30 kPa hard limit.
    c.set_band_values(21.0, 29.5)
    assert not c.band_button.isEnabled()
    assert c.status_label.text().startswith("Band not valid: the high edge must")
    # ... and what the device says it cannot do (INFO: hard limit 28 kPa).
    c.set_band_values(21.0, 28.5)
    assert not c.band_button.isEnabled() and "device's hard limit" in c.status_label.text()

    # Sent anyway (the device is the final judge): NACK OUT_OF_RANGE, in words.
    rec = win.send_band(2, 21.0, 28.5)
    qtbot.waitUntil(lambda: rec.state == "failed", timeout=3000)
    assert rec.detail == "refused: value out of the device's range (OUT_OF_RANGE)"
    assert c.status_label.text() == f"{rec.label}: {rec.detail}"
    assert win.tiles.tiles[1].command_label.toolTip() == f"Band: {rec.detail}"
    assert win.pipeline.config.cup(2).band_high_kpa == 24.0        # unchanged
    # A cup the device does not have: NACK BAD_CUP.
    rec = win.send_to_cups("vent", 5)
    qtbot.waitUntil(lambda: rec.state == "failed", timeout=3000)
    assert rec.text == "Vent cup 5: refused: no such cup on the device (BAD_CUP)"
    assert "Traceback" not in win.statusBar().currentMessage()


def test_release_all_vents_every_cup(qtbot, window):
    win = window
    _connect(qtbot, win, "sim://normal?cups=3&speed=4", 3)
    seen = Seen(win)
    qtbot.keyClick(win, QtCore.Qt.Key.Key_F9)               # Release all, from anywhere
    assert seen.texts[0] == "Release all: sending…"
    qtbot.waitUntil(lambda: _states(win) == ["Released"] * 3, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: seen.texts[-1] == "Release all: done", timeout=3000)
    assert all(t.command_label.text() in ("Release all: done", "Release all ✓")
               for t in win.tiles.tiles)
    assert win.banner.priority is None                       # a release never alarms


def test_a_text_format_device_cannot_take_commands_and_says_why(qtbot, window):
    win = window
    assert win.connect_url("sim://normal?cups=2&format=text")
    qtbot.waitUntil(lambda: "text" in win.controls.command_reason, timeout=WAIT_MS)
    c = win.controls
    assert not c.release_button.isEnabled() and not c.vent_button.isEnabled()
    assert "text (serial-plotter) format" in c.vent_button.toolTip()
    assert c.record_button.isEnabled()                       # it can still be recorded
