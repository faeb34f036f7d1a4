"""The main window (offscreen): layout at 1366x768, screenshot, link errors as
messages, alarms end to end, units and settings. Driven by a synthetic source."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PySide6 import QtCore, QtGui

from firmware_bridge.messages import DeviceInfo, LinkState, SampleBlock
from firmware_bridge.ports import PortInfo
from firmware_bridge.protocol import InfoFlags, Status
from firmware_bridge.source import Source
from monitor.gui.app import render_screenshot
from monitor.gui.connection_bar import SIMULATOR
from monitor.gui.main_window import MainWindow
from monitor.gui.tiles import NO_SIGNAL_TEXT

pytestmark = pytest.mark.gui


class FakeSource(Source):
    """Synthetic live device: ``cups`` cups at ``rate`` Hz, 22.5 +- 1.5 kPa;
    ``over_cup`` held at 28 kPa (over suction). ``silence()`` stops the data
    without closing, like a pulled cable."""

    def __init__(self, cups: int = 4, rate: int = 100, over_cup: int | None = None) -> None:
        super().__init__()
        self.cups, self.rate, self.over_cup = cups, rate, over_cup
        self._stop = threading.Event()
        self._quiet = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        info = DeviceInfo("FAKE-0042", (1, 2, 3), self.cups, self.rate,
                          flags=int(InfoFlags.CAL_ON_DEVICE))
        self._info = info
        self._publish_state(LinkState.CONNECTING, "opening fake://")
        self._publish_state(LinkState.CONNECTED, "connected to fake://", info)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n, i, t0 = max(1, self.rate // 50), 0, time.monotonic()
        while not self._stop.is_set():
            if not self._quiet.is_set():
                t = (i + np.arange(n)) / self.rate
                y = 22.5 + 1.5 * np.sin(t[:, None] + np.arange(self.cups))
                if self.over_cup:
                    y[:, self.over_cup - 1] = 28.0
                st = np.full((n, self.cups), int(Status.REGULATING), np.uint8)
                self.notifier.publish_block(
                    SampleBlock(t, y.astype(np.float32), st, time.monotonic()))
            i += n
            self._stop.wait(max(0.0, t0 + i / self.rate - time.monotonic()))

    def silence(self) -> None:
        self._quiet.set()

    def fail(self, message: str) -> None:
        self._publish_state(LinkState.ERROR, message)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._publish_state(LinkState.CLOSED, "closed fake://")
        self.notifier.stop()


def _tile_texts(win: MainWindow) -> list[str]:
    return [t.value_label.text() for t in win.tiles.tiles]


def test_window_fits_1366x768_with_16_cups(qtbot, make_window):
    win = make_window(source_factory=lambda url: FakeSource(cups=16, over_cup=3))
    assert win.connect_url("fake://")
    qtbot.waitUntil(lambda: len(win.tiles.tiles) == 16 and win.banner.priority == "high",
                    timeout=5000)
    hint = win.minimumSizeHint()
    assert hint.width() <= 1366 and hint.height() <= 768
    assert (win.width(), win.height()) == (1366, 768)
    assert win.traces.plots[0].getViewBox().height() / 16 >= 12   # 16 trace rows still drawn
    assert win.device_panel.text("serial") == "FAKE-0042"
    assert win.device_panel.text("calibration").startswith("calibrated (stored on device)")


def test_screenshot_is_written_after_live_data(qtbot, tmp_path):
    out = render_screenshot("fake://", tmp_path / "shot.png", 0.6,
                            source_factory=lambda url: FakeSource(cups=4))
    img = QtGui.QImage(str(out))
    assert not img.isNull() and (img.width(), img.height()) == (1366, 768)
    colours = {img.pixel(x, y) for x in range(0, 1366, 17) for y in range(0, 768, 17)}
    assert len(colours) > 20                                   # a rendered window, not a blank


def test_a_link_error_is_a_message_not_a_traceback(qtbot, make_window):
    win = make_window()                                        # the real SerialLink factory
    win.connect_url("/dev/ttyCUPMON-NOPE")                     # opens on a worker thread
    qtbot.waitUntil(lambda: win.connection.error_text != "", timeout=5000)
    msg = win.connection.error_text
    assert "ttyCUPMON-NOPE" in msg and "Traceback" not in msg and "\n" not in msg
    assert win.connection.connect_button.text() == "Connect"   # ready for another try
    assert win.source is None

    def broken(url):
        raise RuntimeError("boom")
    win.source_factory = broken
    assert not win.connect_url("x://")
    assert win.connection.error_text.startswith("internal error (RuntimeError: boom)")


def test_an_error_during_the_session_shows_in_the_bar(qtbot, make_window):
    src = FakeSource()
    win = make_window(source_factory=lambda url: src)
    assert win.connect_url("fake://")
    qtbot.waitUntil(lambda: win.connection.state_label.text() == "Connected", timeout=3000)
    src.fail("no valid frame for 3 s: is the baud rate right (115200)?")
    qtbot.waitUntil(lambda: "baud rate" in win.connection.error_text, timeout=3000)
    assert "baud rate" in win.connection.state_label.text()


def test_alarm_end_to_end_and_acknowledge(qtbot, make_window):
    win = make_window(source_factory=lambda url: FakeSource(cups=4, over_cup=2))
    win.connect_url("fake://")
    qtbot.waitUntil(lambda: win.banner.priority == "high", timeout=5000)
    tile = win.tiles.tiles[1]
    assert tile.state_label.text() == "Over suction" and tile.value_label.text() == "28.0"
    assert win.banner.message_label.text().startswith("Cup 2")
    assert win.banner.flashing
    qtbot.keyClick(win, QtCore.Qt.Key.Key_F2)                  # acknowledge
    qtbot.waitUntil(lambda: not win.banner.flashing, timeout=3000)
    assert all(a.acknowledged for a in win.pipeline.snapshot().alarms if a.cup == 2)


def test_lost_data_shows_no_signal_instead_of_the_last_value(qtbot, make_window):
    src = FakeSource(cups=2)
    win = make_window(source_factory=lambda url: src)
    win.connect_url("fake://")
    qtbot.waitUntil(lambda: len(win.tiles.tiles) == 2
                    and win.tiles.tiles[0].value_label.text() not in ("--", NO_SIGNAL_TEXT),
                    timeout=5000)
    src.silence()
    qtbot.waitUntil(lambda: _tile_texts(win) == [NO_SIGNAL_TEXT] * 2, timeout=5000)
    qtbot.waitUntil(lambda: win.banner.priority == "high", timeout=3000)   # signal loss alarm


def test_unit_choice_and_settings_persist(qtbot, make_window, settings):
    win = make_window(source_factory=lambda url: FakeSource(cups=2))
    win.connection.choose_url("sim://leak?cups=2&rate=250")
    bar = win.connection
    assert bar.source_box.currentData() == SIMULATOR and bar.cups_spin.value() == 2
    assert bar.rate_box.currentData() == 250 and bar.url == "sim://leak?cups=2&rate=250"
    win.unit_box.setCurrentIndex(win.unit_box.findData("mmHg"))
    win.traces.set_window(120)
    win.connect_url("sim://leak?cups=2&rate=250")
    qtbot.waitUntil(lambda: len(win.tiles.tiles) == 2
                    and win.tiles.tiles[0].unit_label.text() == "mmHg", timeout=5000)
    value = float(win.tiles.tiles[0].value_label.text())
    assert 140 < value < 190                                   # 20-25 kPa in mmHg
    win.close()
    again = make_window()
    assert again.unit == "mmHg" and again.traces.window_s == 120
    assert again.connection.url == "sim://leak?cups=2&rate=250"


def test_port_list_shows_descriptions_and_serial_numbers(qtbot, make_window, monkeypatch):
    import firmware_bridge.ports as ports

    fake = [PortInfo("/dev/ttyACM0", "Arduino Uno", 0x2341, 0x0043, "85735313", "Arduino"),
            PortInfo("/dev/ttyUSB10", "FT232R USB UART", 0x0403, 0x6001, None, "FTDI")]
    monkeypatch.setattr(ports, "list_ports", lambda: fake)
    win = make_window()
    win.connection.refresh_button.click()
    box = win.connection.source_box
    texts = [box.itemText(i) for i in range(box.count())]
    assert "/dev/ttyACM0 — Arduino Uno (SN 85735313)" in texts
    assert "/dev/ttyUSB10 — FT232R USB UART" in texts
    assert texts[0] == "Simulator" and texts[-1] == "Other URL…"
    box.setCurrentIndex(texts.index("/dev/ttyUSB10 — FT232R USB UART"))
    assert win.connection.url == "/dev/ttyUSB10"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_the_built_in_simulator_end_to_end(qtbot, make_window):
    """Connection bar -> SerialLink on sim:// -> pipeline + display buffer -> widgets."""
    win = make_window()                                        # the real SerialLink factory
    bar = win.connection
    bar.source_box.setCurrentIndex(bar.source_box.findData(SIMULATOR))
    bar.cups_spin.setValue(2)
    assert bar.url.startswith("sim://") and "cups=2" in bar.url
    assert bar.scenario_box.count() > 1                         # the simulator's scenario list
    bar.connect_button.click()
    qtbot.waitUntil(lambda: len(win.tiles.tiles) == 2
                    and _is_number(win.tiles.tiles[0].value_label.text())
                    and win.traces.stats.drawn > 0, timeout=10000)
    win.tick()
    qtbot.waitUntil(lambda: win.device_panel.text("serial").startswith("SIM-"), timeout=3000)
    assert bar.state_label.text() == "Connected"
    bar.connect_button.click()                                 # Disconnect
    qtbot.waitUntil(lambda: bar.connect_button.text() == "Connect", timeout=3000)
    assert win.source is None and bar.state_label.text() == "Disconnected"


def test_a_capture_replays_through_the_same_window(qtbot, make_window, tmp_path):
    """replay:FILE in the URL field replays a capture (here: bytes a simulated
    device wrote) as fast as possible; at its end the window is ready to
    connect again and keeps showing what was received."""
    from sim.device import make_simulation
    from sim.transports import write_capture

    capture = tmp_path / "run.bin"
    write_capture(make_simulation("normal", cups=2, rate_hz=100, duration_s=20.0), capture)
    win = make_window()
    win.connection.choose_url(f"replay:{capture}")
    win.connection.connect_button.click()
    qtbot.waitUntil(lambda: win.connection.connect_button.text() == "Connect"
                    and win.buffer.span() is not None, timeout=10000)
    assert win.buffer.span()[1] == pytest.approx(20.0, abs=0.05)
    assert win.connection.state_label.text() == "Disconnected"
    assert win.connection.error_text == ""
