"""The main window: connection bar, alarm banner, cup tiles, traces, device panel.

Threads (docs/gui.md): the source's reader thread decodes; the pipeline
(checker + alarms) and the DisplayBuffer run as listeners on their own
dispatch threads; this window, on the GUI thread, only reads
``pipeline.snapshot()`` (10 Hz), ``buffer.view()`` (trace timer, <= 60 Hz)
and a small queue of link events, and sends user actions (acknowledge,
audio pause) back. It computes no alarm and never waits on the device.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from firmware_bridge.listener import Listener
from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState
from firmware_bridge.source import Source
from monitor.config import MonitorConfig
from monitor.display_buffer import DisplayBuffer
from monitor.errors import user_message
from monitor.pipeline import MonitorPipeline
from monitor.snapshot import MonitorSnapshot
from monitor.units import PER_KPA, normalize_unit

from .alarm_banner import AlarmBanner
from .audio import AlarmSound
from .connection_bar import ConnectionBar
from .device_panel import DevicePanel
from .flash import Flasher
from .tiles import TileGrid
from .traces import TracePanel

log = logging.getLogger(__name__)

SourceFactory = Callable[[str], Source]
UI_INTERVAL_MS = 100     # tiles, banner, sound: 10 Hz is readable and cheap
PANEL_EVERY = 5          # device panel every 5th UI tick (2 Hz)
LIVE_KEY = "F5"


REPLAY_PREFIX = "replay:"


def default_source_factory(url: str) -> Source:
    """A SerialLink on ``url`` (device path or pyserial URL; ``sim://`` is the
    simulator), or ``replay:ID|PATH`` for a stored session or capture file."""
    if url.startswith(REPLAY_PREFIX):
        from monitor.replay import open_replay

        return open_replay(url[len(REPLAY_PREFIX):].strip())
    if url.startswith("sim://"):
        import sim  # noqa: F401  (registers the sim:// handler with pyserial)
    from firmware_bridge.link import SerialLink

    return SerialLink(url)


class _LinkRelay(Listener):
    """Collects link events and device info on the listener thread for the GUI
    timer to read (a deque: appends and pops are thread-safe)."""

    idle_interval = None

    def __init__(self) -> None:
        self.queue: collections.deque[Any] = collections.deque(maxlen=256)

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, LinkEvent | DeviceInfo):
            self.queue.append(msg)


class MainWindow(QtWidgets.QMainWindow):
    """cupmon's window. ``settings``: where choices persist (None: the user's
    QSettings; pass ``persist=False`` for screenshots and tests)."""

    #: (source, label, exception or None) from the thread that starts a source.
    _started = QtCore.Signal(object, str, object)

    def __init__(self, config: MonitorConfig | None = None, *,
                 settings: QtCore.QSettings | None = None, persist: bool = True,
                 source_factory: SourceFactory | None = None, audio: bool = True,
                 fps: float = 30.0, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("cupmon – cupping monitor")
        self.config = config or MonitorConfig()
        self.persist = persist
        self.settings = settings if settings is not None else QtCore.QSettings("cupmon", "cupmon")
        self.source_factory = source_factory or default_source_factory
        self.source: Source | None = None
        self.source_label = ""
        self.pipeline: MonitorPipeline | None = None
        self.buffer = DisplayBuffer()
        self._relay: _LinkRelay | None = None
        self._info: DeviceInfo | None = None
        self._link_state: LinkState | None = None
        self._snapshot: MonitorSnapshot | None = None
        self._ticks = 0
        self._fps_mark = (time.monotonic(), 0)
        self._fps = 0.0
        self.unit = normalize_unit(self.config.unit)
        self.last_error = ""
        self.last_exception: BaseException | None = None
        self.starting = False

        self.flasher = Flasher(self)
        self.sound = AlarmSound(self, enabled=audio)
        self.connection = ConnectionBar()
        self.banner = AlarmBanner(self.flasher, pause_s=self.config.audio_pause_s)
        self.banner.set_audio_note("" if self.sound.available else self.sound.note)
        self.tiles = TileGrid(self.flasher)
        self.traces = TracePanel(self.buffer, fps=fps)
        self.device_panel = DevicePanel()
        self.unit_box = QtWidgets.QComboBox()
        for u in PER_KPA:
            self.unit_box.addItem(u, u)
        self.unit_box.setToolTip("Display unit for values, bands and traces")
        self.traces.add_control(QtWidgets.QLabel("Unit"))
        self.traces.add_control(self.unit_box)

        self._build_layout()
        self._wire()
        self._restore_settings()

        self.ui_timer = QtCore.QTimer(self)
        self.ui_timer.setInterval(UI_INTERVAL_MS)
        self.ui_timer.timeout.connect(self.tick)
        self.ui_timer.start()
        self.traces.start()

    # ---------------------------------------------------------------- layout
    def _build_layout(self) -> None:
        central = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(central)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.setSpacing(4)
        lay.addWidget(self.connection)
        lay.addWidget(self.banner)
        lay.addWidget(self.tiles)
        lay.addWidget(self.traces, 1)
        self.setCentralWidget(central)
        self.device_dock = QtWidgets.QDockWidget("Device", self)
        self.device_dock.setObjectName("deviceDock")
        self.device_dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable
                                     | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.device_panel.setTitle("")
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.device_panel)
        self.device_dock.setWidget(scroll)
        self.device_dock.setMinimumWidth(200)
        self.device_dock.setMaximumWidth(280)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.RightDockWidgetArea, self.device_dock)
        view = self.menuBar().addMenu("&View")
        toggle = self.device_dock.toggleViewAction()
        toggle.setText("&Device panel")
        view.addAction(toggle)
        live = QtGui.QAction("Traces &live", self)
        live.setShortcut(QtGui.QKeySequence(LIVE_KEY))
        live.triggered.connect(self.traces.go_live)
        view.addAction(live)
        quit_ = QtGui.QAction("&Quit", self)
        quit_.setShortcut(QtGui.QKeySequence.StandardKey.Quit)
        quit_.triggered.connect(self.close)
        self.menuBar().addMenu("&File").addAction(quit_)
        self.statusBar().showMessage("Choose a source and press Connect.")

    def _wire(self) -> None:
        self._started.connect(self._on_started)  # queued: emitted from a worker
        self.connection.connectRequested.connect(self.connect_url)
        self.connection.disconnectRequested.connect(self.disconnect_source)
        self.banner.acknowledgeRequested.connect(self.acknowledge)
        self.banner.audioPauseRequested.connect(self.pause_audio)
        self.unit_box.currentIndexChanged.connect(
            lambda i: self.set_unit(str(self.unit_box.itemData(i))))

    # -------------------------------------------------------------- settings
    def _restore_settings(self) -> None:
        s = self.settings
        unit = str(s.value("display/unit", self.unit))
        try:
            self.set_unit(unit)
        except ValueError:
            self.set_unit("kPa")
        self.traces.set_window(float(s.value("traces/window_s", self.traces.window_s)))
        mode = str(s.value("traces/mode", self.traces.mode))
        if mode in ("rows", "overlay"):
            self.traces.set_mode(mode)
        url = str(s.value("source/url", ""))
        if url:
            self.connection.choose_url(url)
        geometry = s.value("window/geometry")
        if isinstance(geometry, QtCore.QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        state = s.value("window/state")
        if isinstance(state, QtCore.QByteArray) and not state.isEmpty():
            self.restoreState(state)

    def save_settings(self) -> None:
        if not self.persist:
            return
        s = self.settings
        s.setValue("display/unit", self.unit)
        s.setValue("traces/window_s", self.traces.window_s)
        s.setValue("traces/mode", self.traces.mode)
        if self.connection.url:
            s.setValue("source/url", self.connection.url)
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.sync()

    def set_unit(self, unit: str) -> None:
        """Display unit for tiles, bands and traces."""
        self.unit = normalize_unit(unit)
        i = self.unit_box.findData(self.unit)
        if i != self.unit_box.currentIndex():
            self.unit_box.blockSignals(True)
            self.unit_box.setCurrentIndex(i)
            self.unit_box.blockSignals(False)
        self.traces.set_unit(self.unit)
        if self._snapshot is not None:
            self._show_snapshot(self._snapshot)

    # ------------------------------------------------------------ the source
    def connect_url(self, url: str) -> bool:
        """Open ``url`` with the source factory and start monitoring it. A
        failure shows as a message in the connection bar; returns False."""
        self.connection.clear_error()
        self.last_error, self.last_exception = "", None
        try:
            source = self.source_factory(url)
        except Exception as exc:
            self.show_failure(url, exc)
            return False
        return self.attach_source(source, url)

    def attach_source(self, source: Source, label: str) -> bool:
        """Monitor an already built (not started) ``source``: a link, a replay.

        The source is started on a worker thread (opening a socket:// or
        rfc2217:// URL can take seconds); :attr:`starting` is True until it
        has opened or failed, and a failure shows in the connection bar.
        Returns True when the start is under way."""
        self.disconnect_source()
        self.pipeline = MonitorPipeline(self.config)
        self.buffer = DisplayBuffer()
        self._relay = _LinkRelay()
        self._info = None
        self._snapshot = None
        self.traces.set_buffer(self.buffer)
        for lst in (self._relay, self.pipeline, self.buffer):
            source.add_listener(lst)
        self.source, self.source_label = source, label
        self.connection.set_connected(True)
        self.statusBar().showMessage(f"Opening {label}…")
        self.starting = True

        def start() -> None:
            try:
                source.start()
            except Exception as exc:  # reported on the GUI thread, as one line
                self._started.emit(source, label, exc)
            else:
                self._started.emit(source, label, None)

        threading.Thread(target=start, name="source-start", daemon=True).start()
        return True

    def _on_started(self, source: Source, label: str, exc: BaseException | None) -> None:
        """The worker's verdict, delivered on the GUI thread (queued signal)."""
        if source is not self.source:  # the user moved on meanwhile
            if exc is None:
                self._stop_source(source, wait=False)
            return
        self.starting = False
        if exc is not None:
            self.show_failure(label, exc)
            self._stop_source(source, wait=False)
            self.source = None
            self.connection.set_connected(False)
            return
        if self.persist:
            self.settings.setValue("source/url", label)

    def wait_started(self, timeout_s: float = 10.0) -> bool:
        """Run the event loop until the current start has finished (for
        screenshots and tests). True when a source is open."""
        if self.starting:
            loop = QtCore.QEventLoop()
            # Connected after _on_started, so the verdict is applied first.
            self._started.connect(loop.quit)
            QtCore.QTimer.singleShot(int(timeout_s * 1000), loop.quit)
            if self.starting:
                loop.exec()
            self._started.disconnect(loop.quit)
        return self.source is not None and not self.starting

    def show_failure(self, label: str, exc: BaseException) -> None:
        """Say why ``label`` could not be opened, in one line (never a traceback)."""
        msg = user_message(exc)
        log.info("cannot open %s: %s", label, msg)
        self.connection.show_error(msg)
        self.connection.show_state(LinkState.ERROR, "Not connected")
        self.statusBar().showMessage(msg)
        self.last_error, self.last_exception = msg, exc

    def disconnect_source(self) -> None:
        """Stop the current source (in the background: closing a port may block)."""
        source, self.source = self.source, None
        self.starting = False
        if source is not None:
            self._stop_source(source, wait=False)
            self.connection.show_state(LinkState.CLOSED, "")
            self.statusBar().showMessage(f"Disconnected from {self.source_label}.")
        self.connection.set_connected(False)
        self.sound.set_pattern(None)

    @staticmethod
    def _stop_source(source: Source, wait: bool) -> None:
        t = threading.Thread(target=source.stop, name="source-stop", daemon=True)
        t.start()
        if wait:
            t.join(6.0)

    # ------------------------------------------------------------ user acts
    def acknowledge(self) -> None:
        if self.pipeline is not None:
            self.pipeline.acknowledge()
            self.tick()

    def pause_audio(self) -> None:
        if self.pipeline is not None:
            self.pipeline.pause_audio()
            self.tick()

    # ------------------------------------------------------------- the tick
    def tick(self) -> None:
        """Read the pipeline's snapshot and link events; update the widgets."""
        self._ticks += 1
        self._drain_link_events()
        if self.pipeline is not None:
            snap = self.pipeline.snapshot()
            self._snapshot = snap
            self._show_snapshot(snap)
        if self._ticks % PANEL_EVERY == 1:
            self._show_device()

    def _drain_link_events(self) -> None:
        relay = self._relay
        while relay is not None and relay.queue:
            msg = relay.queue.popleft()
            if isinstance(msg, DeviceInfo):
                self._info = msg
                continue
            if msg.info is not None:
                self._info = msg.info
            self._link_state = msg.state
            self.connection.show_state(msg.state, msg.message)
            if msg.message:
                self.statusBar().showMessage(msg.message)
            if msg.state is LinkState.ERROR and msg.message:
                self.connection.show_error(msg.message)
            if msg.state is LinkState.CLOSED and self.source is not None and not self.starting:
                # The source ended by itself (end of a replay, a fatal link
                # error): ready to connect again; what was received stays shown.
                source, self.source = self.source, None
                self._stop_source(source, wait=False)
                self.connection.set_connected(False)

    def _show_snapshot(self, snap: MonitorSnapshot) -> None:
        self.tiles.show_cups(snap.cups, snap.alarms, self.unit)
        self.banner.show_alarms(snap.alarms, snap.highest_priority, snap.audio)
        self.traces.set_bands([c.band for c in snap.cups])
        self.sound.set_pattern(snap.audio.pattern)
        if snap.device is not None:
            self._info = snap.device

    def _show_device(self) -> None:
        stats = fmt = None
        if self.source is not None:
            try:
                stats = self.source.stats()
            except Exception:  # counters are nice to have, never worth an error
                stats = None
            fmt = getattr(self.source, "detected_mode", "")
        now = time.monotonic()
        t0, n0 = self._fps_mark
        if now - t0 >= 1.0:
            self._fps = (self.traces.stats.drawn - n0) / (now - t0)
            self._fps_mark = (now, self.traces.stats.drawn)
        display = f"{self._fps:.0f} fps, frame {self.traces.stats.last_ms:.1f} ms"
        link = self._link_state.value if self._link_state else ""
        self.device_panel.show_device(source=self.source_label, link=link, info=self._info,
                                      stats=stats, fmt=fmt or "", display=display)

    # ------------------------------------------------------------- closing
    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.save_settings()
        self.ui_timer.stop()
        self.traces.stop()
        self.sound.close()
        source, self.source = self.source, None
        if source is not None:
            self._stop_source(source, wait=True)
        super().closeEvent(event)
