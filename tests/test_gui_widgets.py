"""Cup tiles and the alarm banner (offscreen): values, words, colours, flashing."""

from __future__ import annotations

import math

import pytest
from PySide6 import QtCore, QtWidgets

from monitor.alarms import Alarm, AudioState
from monitor.gui.alarm_banner import AlarmBanner
from monitor.gui.flash import Flasher
from monitor.gui.style import dim, severity_colors
from monitor.gui.tiles import NO_SIGNAL_TEXT, CupTile, TileGrid, clock
from monitor.snapshot import CupView

pytestmark = pytest.mark.gui


def cup(n: int = 1, suction: float = 22.4, state: str = "OK", severity: str = "ok",
        applied: float | None = 192.0, remaining: float | None = 708.0,
        alarms: tuple[str, ...] = ()) -> CupView:
    return CupView(cup=n, suction_kpa=suction, state=state, severity=severity,
                   band=(20.0, 25.0), time_in_target_pct=97.0, applied_s=applied,
                   dwell_remaining_s=remaining, alarms=alarms, pump_on=False,
                   valve_open=False, regulating=True, enabled=True)


def alarm(cup: int | None, condition: str, priority: str, message: str, *,
          active: bool = True, acknowledged: bool = False, t: float = 1.0) -> Alarm:
    return Alarm(cup, condition, priority, t, active, acknowledged, 22.0, message)


@pytest.fixture
def flasher(qtbot):
    return Flasher()


def test_tile_shows_value_unit_state_word_band_and_dwell(qtbot, flasher):
    tile = CupTile(1, flasher)
    qtbot.addWidget(tile)
    tile.show_view(cup(suction=22.46), "kPa")
    assert tile.value_label.text() == "22.5" and tile.unit_label.text() == "kPa"
    assert tile.state_label.text() == "OK"
    assert tile.band_label.text() == "Band 20.0–25.0 · 97%"
    assert tile.time_label.text() == "On 3:12 / 15:00"          # towards the dwell limit
    assert tile.dwell_bar.value() == pytest.approx(1000 * 192 / 900, abs=1)
    tile.show_view(cup(suction=22.46), "mmHg")
    assert tile.value_label.text() == "168" and tile.unit_label.text() == "mmHg"
    tile.show_view(cup(state="Over suction", severity="high", applied=1000, remaining=-100))
    assert tile.state_label.text() == "Over suction"
    assert tile.background() == severity_colors("high")[0]   # colour AND word
    assert tile.time_label.text() == "On 16:40 / 15:00 – over!"


def test_no_signal_replaces_a_stale_value(qtbot, flasher):
    tile = CupTile(2, flasher)
    qtbot.addWidget(tile)
    tile.show_view(cup(suction=23.1))
    assert tile.value_label.text() == "23.1"
    tile.show_view(cup(suction=math.nan, state="No signal", severity="nosignal"))
    assert tile.value_label.text() == NO_SIGNAL_TEXT         # never the old 23.1
    assert not any("23.1" in lab.text() for lab in tile.findChildren(QtWidgets.QLabel))
    assert tile.unit_label.isHidden()
    tile.show_view(cup(suction=21.0))
    assert tile.value_label.text() == "21.0" and not tile.unit_label.isHidden()


def test_grid_lays_out_cups_and_flashes_only_unacknowledged_alarm_cups(qtbot):
    flasher = Flasher()
    grid = TileGrid(flasher)
    qtbot.addWidget(grid)
    views = [cup(1), cup(2, state="Over suction", severity="high"),
             cup(3, state="Under suction", severity="medium")]
    alarms = [alarm(2, "over_suction", "high", "x"),
              alarm(3, "under_suction", "medium", "y", acknowledged=True)]
    grid.show_cups(views, alarms, "kPa")
    assert [t.cup for t in grid.tiles] == [1, 2, 3]
    seen = {grid.tiles[1].background()}
    qtbot.waitUntil(lambda: (seen.add(grid.tiles[1].background()) or len(seen) == 2),
                    timeout=2000)
    assert seen == {severity_colors("high")[0], dim(severity_colors("high")[0])}
    assert grid.tiles[2].background() == severity_colors("medium")[0]   # acknowledged: steady
    grid.show_cups([cup(i) for i in range(1, 17)], [], "kPa")
    assert len(grid.tiles) == 16
    assert grid.layout().rowCount() == 2                     # 8 per row


def test_banner_shows_highest_priority_in_its_colour_and_flashes(qtbot):
    flasher = Flasher()
    banner = AlarmBanner(flasher)
    qtbot.addWidget(banner)
    assert banner.priority is None and banner.message_label.text() == "No active alarms"
    alarms = [alarm(1, "over_suction", "high", "Cup 1: suction 27.0 kPa is above the limit."),
              alarm(2, "leak", "medium", "Cup 2 is leaking.")]
    banner.show_alarms(alarms, "high", AudioState("high", None, None, 0))
    assert banner.priority == "high"
    assert banner.priority_label.text() == "HIGH"
    assert banner.message_label.text().startswith("Cup 1: suction 27.0 kPa")
    assert "+ 1 more alarm" in banner.more_label.text()
    assert banner.alarm_list.count() == 2 and not banner.alarm_list.isHidden()
    # flashes at ~2 Hz: the background toggles between red and dark red
    assert flasher.interval_ms("high") == 250
    seen = {banner.background()}
    qtbot.waitUntil(lambda: (seen.add(banner.background()) or len(seen) == 2), timeout=2000)
    red = severity_colors("high")[0]
    assert seen == {red, dim(red)}


def test_banner_medium_flashes_slowly_low_is_steady_and_ack_stops_flashing(qtbot):
    flasher = Flasher()
    banner = AlarmBanner(flasher)
    qtbot.addWidget(banner)
    banner.show_alarms([alarm(3, "leak", "medium", "Cup 3 is leaking.")])
    assert banner.priority == "medium"
    assert 1000 / (2 * flasher.interval_ms("medium")) == pytest.approx(0.6, abs=0.01)
    seen = {banner.background()}
    qtbot.waitUntil(lambda: (seen.add(banner.background()) or len(seen) == 2), timeout=3000)
    banner.show_alarms([alarm(3, "leak", "medium", "Cup 3 is leaking.", acknowledged=True)])
    for _ in range(2):  # two phase changes of the medium clock: the banner stays steady
        with qtbot.waitSignal(flasher.toggled, timeout=3000,
                              check_params_cb=lambda sev: sev == "medium"):
            pass
        assert banner.background() == severity_colors("medium")[0]
    assert not banner.ack_button.isEnabled()
    banner.show_alarms([alarm(1, "dwell_exceeded", "low", "Cup 1 has been on 10 min.")])
    assert banner.background() == severity_colors("low")[0]
    assert flasher.interval_ms("low") is None


def test_banner_buttons_and_shortcuts_emit_requests_and_audio_state_shows(qtbot):
    banner = AlarmBanner(Flasher())
    qtbot.addWidget(banner)
    banner.show()
    qtbot.waitExposed(banner)
    banner.show_alarms([alarm(None, "signal_loss", "high", "No data from the device.")],
                       "high", AudioState(None, 130.0, 95.0, 1))
    assert banner.audio_label.text() == "Audio paused 1:35"
    with qtbot.waitSignal(banner.acknowledgeRequested, timeout=1000):
        banner.ack_button.click()
    with qtbot.waitSignal(banner.audioPauseRequested, timeout=1000):
        banner.pause_button.click()
    for key, sig in ((QtCore.Qt.Key.Key_F2, banner.acknowledgeRequested),
                     (QtCore.Qt.Key.Key_F3, banner.audioPauseRequested)):
        banner.activateWindow()
        qtbot.waitUntil(banner.isActiveWindow, timeout=2000)
        with qtbot.waitSignal(sig, timeout=1000):
            qtbot.keyClick(banner, key)
    banner.set_audio_note("No audio device: alarms are visual only")
    assert not banner.note_label.isHidden()


def test_clock_format():
    assert clock(0) == "0:00" and clock(192.4) == "3:12" and clock(3725) == "1:02:05"
    assert clock(-5) == "0:00"
