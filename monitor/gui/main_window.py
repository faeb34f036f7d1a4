"""The main window: connection bar, alarm banner, then tabs (Monitor: pump
controls, cup tiles, replay timeline, traces; Alarm log; Sessions; and any
tab added with :meth:`MainWindow.add_tab`), and the device panel.

Threads (docs/gui.md): the source's reader thread decodes; the pipeline
(checker + alarms), the DisplayBuffer and a recording's Recorder run as
listeners on their own dispatch threads; this window, on the GUI thread,
only reads ``pipeline.snapshot()`` (10 Hz), ``buffer.view()`` (trace timer,
<= 60 Hz) and small queues of link and alarm events, and sends user actions
back. Commands go out on a worker and their ACK/NACK comes back through a
queued signal; database reads and writes run on workers too. It computes no
alarm and never waits on the device or the database.

Recording and the sessions list live in :mod:`.session_actions`, the review
of a stored session (replay with a timeline) in :mod:`.review`; both are
mixed into :class:`MainWindow`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from firmware_bridge.codec import Command
from firmware_bridge.listener import Listener
from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState
from firmware_bridge.protocol import ALL_CUPS as ALL_MASK
from firmware_bridge.protocol import MsgType
from firmware_bridge.source import Source
from monitor.config import ConfigError, MonitorConfig
from monitor.display_buffer import DisplayBuffer
from monitor.errors import user_message
from monitor.pipeline import MonitorPipeline
from monitor.snapshot import MonitorSnapshot
from monitor.store import default_db_path
from monitor.units import PER_KPA, format_pressure, normalize_unit

from .alarm_banner import AlarmBanner
from .alarm_log import AlarmLogPane
from .audio import AlarmSound
from .commands import CommandRecord, CommandSender
from .connection_bar import ConnectionBar
from .controls import ALL_CUPS, ControlBar, install_release_shortcut
from .device_panel import DevicePanel
from .flash import Flasher
from .replay_bar import ReplayBar
from .review import REPLAY_PREFIX, ReplayState, ReviewActions, is_replay_source
from .session_actions import RECORD_KEY, SessionActions
from .sessions import SessionDialog, SessionsPane, SummaryDialog
from .tiles import TileGrid
from .traces import TracePanel
from .worker import AsyncRunner

log = logging.getLogger(__name__)

SourceFactory = Callable[[str], Source]
UI_INTERVAL_MS = 100     # tiles, banner, sound: 10 Hz is readable and cheap
PANEL_EVERY = 5          # device panel every 5th UI tick (2 Hz)
LIVE_KEY = "F5"
#: How long a command's outcome stays on its tile, s (a failure stays longer).
TILE_OK_S, TILE_FAIL_S = 8.0, 30.0



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


class MainWindow(SessionActions, ReviewActions, QtWidgets.QMainWindow):
    """cupmon's window. ``settings``: where choices persist (None: the user's
    QSettings; pass ``persist=False`` for screenshots and tests). ``db_path``:
    the session database (default: the saved choice, else
    ``monitor.store.default_db_path()``)."""

    #: (source, label, exception or None) from the thread that starts a source.
    _started = QtCore.Signal(object, str, object)
    #: The monitored source changed (a Source, or None when there is none).
    sourceChanged = QtCore.Signal(object)
    #: The calibration in force after a connect (monitor.cal_apply.CalibrationStatus);
    #: emitted from the link's thread, delivered queued on the GUI thread.
    calStatus = QtCore.Signal(object)
    #: A recording started (session id) or ended (None).
    recordingChanged = QtCore.Signal(object)

    def __init__(self, config: MonitorConfig | None = None, *,
                 settings: QtCore.QSettings | None = None, persist: bool = True,
                 source_factory: SourceFactory | None = None, audio: bool = True,
                 fps: float = 30.0, db_path: str | Path | None = None,
                 extra_tabs: bool = True, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("cupmon – cupping monitor")
        self.config = config or MonitorConfig()
        self.persist = persist
        self.settings = settings if settings is not None else QtCore.QSettings("cupmon", "cupmon")
        self.source_factory = source_factory or default_source_factory
        saved_db = self.settings.value("sessions/db", "")
        self.db_path = Path(db_path) if db_path else (Path(str(saved_db)) if saved_db
                                                      else default_db_path())
        self.io = AsyncRunner(self)
        # Start and stop of a recording run one after the other, never overlapping.
        self.rec_io = AsyncRunner(self, workers=1, name="gui-recording")
        self.commands = CommandSender(self)
        self.recorder: Any = None           # monitor.recorder.Recorder while recording
        self.recording_state = "idle"        # idle | starting | recording | stopping
        self.recording_id: int | None = None
        self._rec_t0 = 0.0
        self._rec_links: tuple[Source, MonitorPipeline] | None = None
        self.replay: ReplayState | None = None
        self.summary_dialog: SummaryDialog | None = None
        self.session_dialog: SessionDialog | None = None
        #: Labels the Record dialog starts with (cupmon --therapist/--patient/--notes).
        self.session_defaults: dict[str, str] = {}
        self._alarm_events: collections.deque[Any] = collections.deque()
        self._tile_commands: dict[int, tuple[int, float]] = {}   # cup -> (record id, until)
        self._command_reason: str | None = None
        self._rec_button_text = ""
        self.source: Source | None = None
        self.source_label = ""
        self.pipeline: MonitorPipeline | None = None
        self.buffer = DisplayBuffer()
        self._relay: _LinkRelay | None = None
        self._info: DeviceInfo | None = None
        self._cal_status: object | None = None  # CalibrationStatus after a connect
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
        self.controls = ControlBar()
        self.controls.set_band_check(self.band_problem, self.band_of)
        self.replay_bar = ReplayBar()
        self.replay_bar.hide()
        self.alarm_log = AlarmLogPane()
        self.sessions = SessionsPane()
        self.sessions.set_database(self.db_path)

        self._build_layout()
        self._wire()
        self._restore_settings()
        if extra_tabs:
            self._install_extra_tabs()

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
        lay.addWidget(self.banner)      # above the tabs: alarms show whatever tab is open
        monitor = QtWidgets.QWidget()
        mlay = QtWidgets.QVBoxLayout(monitor)
        mlay.setContentsMargins(0, 2, 0, 0)
        mlay.setSpacing(4)
        mlay.addWidget(self.controls)
        mlay.addWidget(self.tiles)
        mlay.addWidget(self.replay_bar)
        mlay.addWidget(self.traces, 1)
        self.monitor_page = monitor
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(monitor, "Monitor")
        self.tabs.addTab(self.alarm_log, "Alarm log")
        self.tabs.addTab(self.sessions, "Sessions")
        lay.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.device_dock = QtWidgets.QDockWidget("Device", self)
        self.device_dock.setObjectName("deviceDock")
        self.device_dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable
                                     | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.device_panel.setTitle("")
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
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
        file_ = self.menuBar().addMenu("&File")
        self.record_action = QtGui.QAction("&Record session… / stop", self)
        self.record_action.setShortcut(QtGui.QKeySequence(RECORD_KEY))
        self.record_action.triggered.connect(self.toggle_recording)
        file_.addAction(self.record_action)
        db = QtGui.QAction("Session &database…", self)
        db.triggered.connect(self.choose_database)
        file_.addAction(db)
        file_.addSeparator()
        file_.addAction(quit_)
        self.release_shortcut = install_release_shortcut(self, self.controls)
        self.statusBar().showMessage("Choose a source and press Connect.")

    def add_tab(self, widget: QtWidgets.QWidget, title: str) -> int:
        """Add a page after Monitor, Alarm log and Sessions (e.g. "Technician");
        returns its index. The page can follow ``sourceChanged`` and use
        :attr:`source`, :attr:`pipeline` and :attr:`commands`."""
        return self.tabs.addTab(widget, title)

    def _install_extra_tabs(self) -> None:
        """Pages other modules provide: ``monitor.gui.technician_tab.install(window)``
        when that module exists."""
        try:
            from . import technician_tab  # type: ignore[attr-defined]
        except ImportError:
            return
        except Exception:  # a broken optional page must not keep the monitor from opening
            log.exception("the technician tab could not be loaded")
            return
        install = getattr(technician_tab, "install", None)
        if install is None:
            return
        try:
            install(self)
        except Exception:  # an optional page must never keep the monitor from opening
            log.exception("the technician tab could not be added")

    def _wire(self) -> None:
        self._started.connect(self._on_started)  # queued: emitted from a worker
        self.calStatus.connect(self._on_cal_status)
        self.connection.connectRequested.connect(self.connect_url)
        self.connection.disconnectRequested.connect(self.disconnect_source)
        self.banner.acknowledgeRequested.connect(self.acknowledge)
        self.banner.audioPauseRequested.connect(self.pause_audio)
        self.unit_box.currentIndexChanged.connect(
            lambda i: self.set_unit(str(self.unit_box.itemData(i))))
        c = self.controls
        c.commandRequested.connect(self.send_to_cups)
        c.bandRequested.connect(self.send_band)
        c.releaseAllRequested.connect(self.release_all)
        c.recordRequested.connect(self.toggle_recording)
        c.cupSelected.connect(self.tiles.select)
        self.tiles.cupClicked.connect(c.select_cup)
        self.tiles.commandRequested.connect(self._tile_command)
        self.commands.changed.connect(self._show_command)
        self.sessions.refreshRequested.connect(self.refresh_sessions)
        self.sessions.openRequested.connect(self.open_session)
        self.sessions.summaryRequested.connect(self.show_session_summary)
        self.sessions.exportRequested.connect(self._ask_export)
        self.sessions.databaseRequested.connect(self.choose_database)
        self.tabs.currentChanged.connect(self._tab_changed)
        self.alarm_log.eventActivated.connect(self._log_event_activated)
        r = self.replay_bar
        r.seekRequested.connect(self.seek_replay)
        r.speedChanged.connect(self.set_replay_speed)
        r.playToggled.connect(self.toggle_replay)
        r.closeRequested.connect(self.close_replay)
        r.summaryRequested.connect(self.show_replay_summary)

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
        self.controls.set_unit(self.unit)
        if self._snapshot is not None:
            self._show_snapshot(self._snapshot)

    # ------------------------------------------------------------ the source
    def connect_url(self, url: str) -> bool:
        """Open ``url`` with the source factory and start monitoring it. A
        failure shows as a message in the connection bar; returns False.
        ``replay:ID`` (a stored session) opens it for review with a timeline."""
        self.connection.clear_error()
        self.last_error, self.last_exception = "", None
        spec = url[len(REPLAY_PREFIX):].strip() if url.startswith(REPLAY_PREFIX) else ""
        if spec.isdigit() and self.source_factory is default_source_factory:
            self.open_session(int(spec))
            return True
        try:
            source = self.source_factory(url)
        except Exception as exc:
            self.show_failure(url, exc)
            return False
        return self.attach_source(source, url)

    def attach_source(self, source: Source, label: str, *, replay: bool = False,
                      config: MonitorConfig | None = None) -> bool:
        """Monitor an already built (not started) ``source``: a link, a replay.

        The source is started on a worker thread (opening a socket:// or
        rfc2217:// URL can take seconds); :attr:`starting` is True until it
        has opened or failed, and a failure shows in the connection bar.
        ``replay``: the source plays the session under review (keeps the
        replay bar and the recorded alarm log). Returns True when the start
        is under way."""
        self.disconnect_source(keep_replay=replay)
        if not replay:
            self._leave_replay()
        self.pipeline = MonitorPipeline(config or self.config)
        self._alarm_events = collections.deque()
        self.pipeline.add_event_sink(self._alarm_events.append)
        if not replay:
            self.alarm_log.model.set_events([])
            self.alarm_log.set_title(f"Alarm events since connecting to {label}, newest first.")
            self._update_log_tab()
        self.buffer = DisplayBuffer()
        self._relay = _LinkRelay()
        self._info = None
        self._snapshot = None
        self._tile_commands.clear()
        for t in self.tiles.tiles:
            t.show_command("")
        self.traces.set_buffer(self.buffer)
        self._cal_status = None
        if not replay:
            self._apply_calibration(source)
        for lst in (self._relay, self.pipeline, self.buffer):
            source.add_listener(lst)
        self.source, self.source_label = source, label
        self.connection.set_connected(True)
        self.statusBar().showMessage(f"Opening {label}…")
        self.starting = True
        self._update_command_state()
        self.sourceChanged.emit(source)

        def start() -> None:
            try:
                source.start()
            except Exception as exc:  # reported on the GUI thread, as one line
                self._started.emit(source, label, exc)
            else:
                self._started.emit(source, label, None)

        threading.Thread(target=start, name="source-start", daemon=True).start()
        return True

    def _apply_calibration(self, source: Source) -> None:
        """Correct readings with the calibration in force (or write it to a
        device that applies its own) on every connect: monitor/cal_apply.py."""
        from monitor.cal_apply import apply_calibration_on_connect

        try:
            apply_calibration_on_connect(source, db=self.db_path, on_status=self.calStatus.emit)
        except Exception as exc:  # never stop monitoring for this; say it
            log.exception("calibration lookup failed")
            self.statusBar().showMessage(f"Calibration not applied: {exc}")

    def _on_cal_status(self, status: object) -> None:
        self._cal_status = status
        warnings = status.warnings()  # type: ignore[attr-defined]
        if warnings:
            self.statusBar().showMessage("Calibration: " + "; ".join(warnings), 15000)
        self._show_device()

    def calibration_summary(self) -> str:
        """The device panel's calibration line: what is in force, per cup state."""
        st = self._cal_status
        if st is None:
            return ""
        states: dict[str, list[int]] = {}
        for c in st.cups:
            states.setdefault(c.state, []).append(c.cup)
        parts = [f"{word} (cups {', '.join(map(str, cups))})"
                 for word, cups in sorted(states.items())]
        who = "on device" if st.cal_on_device else "by cupmon"
        return f"{'; '.join(parts)}, applied {who}" if parts else (st.error or "")

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
            self._update_command_state()
            self.sourceChanged.emit(None)
            return
        if self.persist and not label.startswith(REPLAY_PREFIX):
            self.settings.setValue("source/url", label)

    def wait_started(self, timeout_s: float = 10.0) -> bool:
        """Run the event loop until the current start has finished, and any
        database work leading to one (opening a stored session): for
        screenshots and tests. True when a source is open."""
        if self.starting or self.io.pending:
            loop = QtCore.QEventLoop()
            # Polled rather than connected to _started: a verdict emitted before
            # a connection is made would never reach it (queued connections
            # are resolved when the signal is emitted).
            poll = QtCore.QTimer()
            poll.setInterval(20)
            poll.timeout.connect(
                lambda: None if self.starting or self.io.pending else loop.quit())
            poll.start()
            QtCore.QTimer.singleShot(int(timeout_s * 1000), loop.quit)
            if self.starting or self.io.pending:
                loop.exec()
            poll.stop()
        return self.source is not None and not self.starting

    def show_failure(self, label: str, exc: BaseException) -> None:
        """Say why ``label`` could not be opened, in one line (never a traceback)."""
        msg = user_message(exc)
        log.info("cannot open %s: %s", label, msg)
        self.connection.show_error(msg)
        self.connection.show_state(LinkState.ERROR, "Not connected")
        self.statusBar().showMessage(msg)
        self.last_error, self.last_exception = msg, exc

    def disconnect_source(self, *, keep_replay: bool = False) -> None:
        """Stop the current source (in the background: closing a port may
        block). A recording on it is finished first (summary stored)."""
        if not keep_replay:
            self._leave_replay()
        if self.recorder is not None:
            self.stop_recording()
        source, self.source = self.source, None
        self.starting = False
        if source is not None:
            self._stop_source(source, wait=False)
            self.connection.show_state(LinkState.CLOSED, "")
            self.statusBar().showMessage(f"Disconnected from {self.source_label}.")
            self.sourceChanged.emit(None)
        self.connection.set_connected(False)
        self.sound.set_pattern(None)
        self._update_command_state()

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

    # ------------------------------------------------------------- commands
    def command_block_reason(self) -> str:
        """Why the current source cannot take commands ("" when it can)."""
        src = self.source
        if self.replay is not None or is_replay_source(src):
            return "a replay plays back a recording; it takes no commands"
        if src is None:
            return "not connected to a device"
        if type(src).send_command is Source.send_command:
            return f"{type(src).__name__} takes no commands"
        if getattr(src, "detected_mode", "") == "text" or getattr(src, "mode", "") == "text":
            return ("this device sends the text (serial-plotter) format, "
                    "which takes no commands")
        return ""

    def _update_command_state(self) -> None:
        reason = self.command_block_reason()
        if reason != self._command_reason:
            self._command_reason = reason
            self.controls.set_command_reason(reason[:1].upper() + reason[1:] if reason else "")
            self.tiles.set_commands_enabled(not reason)
        self._update_recording_button()

    def _cups_for(self, cup: int) -> tuple[int, ...]:
        n = len(self._snapshot.cups) if self._snapshot is not None and self._snapshot.cups else (
            self._info.cups if self._info is not None else 0)
        return tuple(range(1, n + 1)) if cup == ALL_CUPS else (cup,)

    def _send(self, cmd: Command, cups: tuple[int, ...], label: str,
              on_ack: Callable[[CommandRecord], None] | None = None,
              verb: str = "") -> CommandRecord | None:
        source = self.source
        if source is None:
            self.controls.show_status(f"{label}: not connected to a device", "bad")
            self.statusBar().showMessage(f"{label}: not connected to a device")
            return None
        return self.commands.send(source, cmd, cups, label, on_ack, verb=verb)

    def send_to_cups(self, kind: str, cup: int = ALL_CUPS) -> CommandRecord | None:
        """Start, stop or vent ``cup`` (0 = every cup). Returns the command's
        record (its state follows the device's answer) or None."""
        names = {"start": ("Start", MsgType.START), "stop": ("Stop", MsgType.STOP),
                 "vent": ("Vent", MsgType.VENT)}
        label, mtype = names[kind]
        mask = ALL_MASK if cup == ALL_CUPS else 1 << (cup - 1)
        who = "all cups" if cup == ALL_CUPS else f"cup {cup}"
        return self._send(Command(mtype, mask=mask), self._cups_for(cup), f"{label} {who}",
                          verb=label)

    def release_all(self) -> CommandRecord | None:
        """VENT every cup at once (the Release all button, F9)."""
        return self._send(Command(MsgType.VENT, mask=ALL_MASK), self._cups_for(ALL_CUPS),
                          "Release all", verb="Release all")

    def send_band(self, cup: int, low_kpa: float, high_kpa: float) -> CommandRecord | None:
        """SET_BAND for ``cup`` (0 = all). Once the device ACKs, the monitor's
        band follows (``MonitorPipeline.set_band``), so alarms match the
        device. Not validated here: :meth:`band_problem` is the form's check,
        the device is the final judge."""
        lo, hi = round(float(low_kpa), 2), round(float(high_kpa), 2)
        mask = ALL_MASK if cup == ALL_CUPS else 1 << (cup - 1)
        cups = self._cups_for(cup)
        pipeline = self.pipeline
        unit = self.unit
        label = (f"Band {format_pressure(lo, unit, with_unit=False)}–"
                 f"{format_pressure(hi, unit)} " + ("all cups" if cup == ALL_CUPS else f"cup {cup}"))

        def on_ack(rec: CommandRecord) -> None:
            for c in cups:
                if pipeline is not None:
                    pipeline.set_band(c, lo, hi)
                try:  # a later connection starts with the band last set
                    self.config = self.config.with_cup(c, band_low_kpa=lo, band_high_kpa=hi)
                except ConfigError:
                    pass
            self.tick()
            self.controls.show_band()

        return self._send(Command(MsgType.SET_BAND, mask=mask, low_kpa=lo, high_kpa=hi),
                          cups, label, on_ack, verb="Band")

    def band_of(self, cup: int) -> tuple[float, float]:
        """The band (kPa) the monitor checks ``cup`` against now."""
        snap = self._snapshot
        if snap is not None and 1 <= cup <= len(snap.cups):
            return snap.cups[cup - 1].band
        cfg = (self.pipeline.config if self.pipeline is not None else self.config).cup(cup)
        return cfg.band_low_kpa, cfg.band_high_kpa

    def band_problem(self, low_kpa: float, high_kpa: float, cup: int | None = None) -> str:
        """Why a band cannot be set on ``cup`` (default: the selected one); "" if it can.

        low < high, both above 0; the high edge at or below the device's hard
        limit; and a band the monitor can check (its over-suction level, high +
        margin, below the monitor's hard limit; its under-suction level above
        the detached level)."""
        unit = self.unit
        f = lambda v: format_pressure(v, unit)  # noqa: E731
        if not 0 < low_kpa < high_kpa:
            return "the low edge must be above 0 and below the high edge"
        info = self._info
        if info is not None and info.hard_limit_kpa > 0 and high_kpa > info.hard_limit_kpa:
            return f"the high edge must not exceed the device's hard limit {f(info.hard_limit_kpa)}"
        cfg_all = self.pipeline.config if self.pipeline is not None else self.config
        cup = self.controls.cup if cup is None else cup
        for c in self._cups_for(cup) or (1,):
            cc = cfg_all.cup(c)
            if high_kpa + cc.over_margin_kpa >= cc.hard_limit_kpa:
                return (f"the high edge must stay below {f(cc.hard_limit_kpa - cc.over_margin_kpa)}"
                        f" (over-suction alarms {f(cc.over_margin_kpa)} above it, and the hard "
                        f"limit is {f(cc.hard_limit_kpa)})")
            if low_kpa - cc.under_margin_kpa <= cc.detached_kpa:
                return (f"the low edge must be above {f(cc.detached_kpa + cc.under_margin_kpa)}"
                        " (below that an under-suction cup looks detached)")
            try:
                cfg_all.with_cup(c, band_low_kpa=low_kpa, band_high_kpa=high_kpa)
            except ConfigError as exc:
                return str(exc)
        return ""

    def _tile_command(self, cup: int, kind: str) -> None:
        """A tile's context menu: start/stop/vent, or select the cup for its band."""
        if kind == "band":
            self.controls.select_cup(cup)
            self.tabs.setCurrentWidget(self.monitor_page)
            self.controls.low_spin.setFocus()
            self.controls.low_spin.selectAll()
            return
        self.send_to_cups(kind, cup)

    def _show_command(self, rec: CommandRecord) -> None:
        """A command was sent, acknowledged or failed: say so on the tiles it
        concerns, in the controls' status line and in the status bar."""
        self.controls.show_status(rec.text, rec.level)
        self.statusBar().showMessage(rec.text, 0 if rec.level == "busy" else 30000)
        keep = TILE_OK_S if rec.state == "ack" else TILE_FAIL_S
        until = float("inf") if rec.state == "sending" else time.monotonic() + keep
        for cup in rec.cups:
            tile = self.tiles.tile(cup)
            if tile is not None:
                tile.show_command(rec.tile_text, rec.level, rec.tile_short)
                self._tile_commands[cup] = (rec.id, until)

    def _expire_tile_commands(self) -> None:
        now = time.monotonic()
        for cup, (_rid, until) in list(self._tile_commands.items()):
            if now >= until:
                del self._tile_commands[cup]
                tile = self.tiles.tile(cup)
                if tile is not None:
                    tile.show_command("")

    def _tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is self.sessions:
            self.refresh_sessions()
        if self.tabs.widget(index) is self.alarm_log:
            self._update_log_tab(seen=True)

    def _update_log_tab(self, seen: bool = False) -> None:
        i = self.tabs.indexOf(self.alarm_log)
        n = self.alarm_log.model.rowCount()
        self.tabs.setTabText(i, f"Alarm log ({n})" if n else "Alarm log")

    # ------------------------------------------------------------- the tick
    def tick(self) -> None:
        """Read the pipeline's snapshot and link events; update the widgets."""
        self._ticks += 1
        self._drain_link_events()
        self._drain_alarm_events()
        frozen = self.replay is not None and not self.replay.playing
        if self.pipeline is not None and not frozen:
            snap = self.pipeline.snapshot()
            self._snapshot = snap
            self._show_snapshot(snap)
        if self._ticks % PANEL_EVERY == 1:
            self._show_device()
            self._update_command_state()
        if self.recording_state == "recording":
            self._update_recording_button()
        r = self.replay
        if r is not None and r.playing:
            span = self.buffer.span()
            if span is not None:
                r.position = span[1]
                self.replay_bar.show_position(r.position)
        self._expire_tile_commands()

    def _drain_alarm_events(self) -> None:
        q = self._alarm_events
        if not q:
            return
        events = []
        while q:
            events.append(q.popleft())
        if self.replay is None:   # a replay's log holds the recorded events instead
            self.alarm_log.model.add_events(e.to_dict() for e in events)
            self._update_log_tab()

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
                if self.recorder is not None:
                    self.stop_recording()
                source, self.source = self.source, None
                self._stop_source(source, wait=False)
                self.connection.set_connected(False)
                self.sourceChanged.emit(None)
                r = self.replay
                if r is not None and r.playing:   # the end of the session
                    r.playing, r.ended = False, True
                    r.position = r.t1
                    self.replay_bar.set_playing(False, ended=True)
                    self.replay_bar.show_position(r.t1)
                self._update_command_state()

    def _show_snapshot(self, snap: MonitorSnapshot) -> None:
        self.tiles.show_cups(snap.cups, snap.alarms, self.unit)
        self.controls.set_cups(len(snap.cups))
        self.banner.show_alarms(snap.alarms, snap.highest_priority, snap.audio)
        self.traces.set_bands([c.band for c in snap.cups])
        # A replay shows its alarms but does not sound them: they are not real.
        self.sound.set_pattern(None if self.replay is not None else snap.audio.pattern)
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
                                      stats=stats, fmt=fmt or "", display=display,
                                      calibration=self.calibration_summary())

    # ------------------------------------------------------------- closing
    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.save_settings()
        self.ui_timer.stop()
        self.traces.stop()
        self.sound.close()
        self.commands.shutdown()
        rec, links = self.recorder, self._rec_links
        if rec is not None and links is not None:
            # Closing while recording: store the summary and end the session
            # here (the window is going away; a short wait is expected).
            src, pipeline = links
            self.recorder = None
            try:
                if rec.session_id is not None:
                    pipeline.remove_event_sink(rec.record_event)
                    pipeline.remove_band_sink(rec.record_band_change)
                    rec.set_summary(pipeline.stats_summary())
                src.remove_listener(rec)
                rec.stop()
            except Exception:
                log.exception("could not end the recording cleanly")
        source, self.source = self.source, None
        if source is not None:
            self._stop_source(source, wait=True)
        self.io.shutdown(wait=False)
        self.rec_io.shutdown(wait=False)
        super().closeEvent(event)
