"""The connection bar: pick a serial port (with description and serial
number), the built-in simulator (scenario, cups, rate) or type any pyserial
URL; connect/disconnect; read the link state in plain words."""

from __future__ import annotations

import logging

from PySide6 import QtCore, QtWidgets

from firmware_bridge.messages import LinkState

log = logging.getLogger(__name__)

SIMULATOR = "__sim__"
OTHER_URL = "__url__"
SIM_RATES = (50, 100, 250, 500, 1000)

#: How each link state reads, and its colour ("ok", "busy", "bad", "idle").
STATE_TEXT: dict[LinkState, tuple[str, str]] = {
    LinkState.CONNECTING: ("Connecting…", "busy"),
    LinkState.CONNECTED: ("Connected", "ok"),
    LinkState.LOST: ("Connection lost – reconnecting", "bad"),
    LinkState.RECONNECTING: ("Reconnecting…", "busy"),
    LinkState.RECONNECTED: ("Reconnected", "ok"),
    LinkState.CLOSED: ("Disconnected", "idle"),
    LinkState.ERROR: ("Problem", "bad"),
}
_LEVEL_STYLE = {
    "ok": "color: #ffffff; background: #2e7d32;",
    "busy": "color: #000000; background: #fbc02d;",
    "bad": "color: #ffffff; background: #c62828;",
    "idle": "color: #ffffff; background: #546e7a;",
}


def scenario_names() -> list[tuple[str, str]]:
    """(name, description) of the simulator's scenarios; ("normal", "") when the
    simulator cannot list them."""
    try:
        from sim.scenarios import list_scenarios
        items = list_scenarios()
    except Exception as exc:  # the simulator is optional for the GUI
        log.debug("no scenario list: %s", exc)
        return [("normal", "")]
    out: list[tuple[str, str]] = []
    for it in items:
        if isinstance(it, str):
            out.append((it, ""))
        elif isinstance(it, tuple | list):
            out.append((str(it[0]), str(it[1]) if len(it) > 1 else ""))
        else:
            out.append((str(getattr(it, "name", it)), str(getattr(it, "description", ""))))
    return out or [("normal", "")]


def sim_url(scenario: str, cups: int, rate: int) -> str:
    """The built-in simulator's URL."""
    try:
        from sim.protocol_sim import make_url
        return make_url(scenario, cups=cups, rate=rate)
    except Exception:  # same format, without the simulator installed
        return f"sim://{scenario}?cups={cups}&rate={rate}"


class ConnectionBar(QtWidgets.QWidget):
    """Source choice + URL + Connect; shows link state and errors in words."""

    connectRequested = QtCore.Signal(str)
    disconnectRequested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._connected = False
        self.source_box = QtWidgets.QComboBox()
        self.source_box.setToolTip("Serial port, the built-in simulator, or any pyserial URL")
        self.source_box.setMinimumContentsLength(18)
        self.source_box.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.refresh_button = QtWidgets.QPushButton("Refresh")
        self.refresh_button.setToolTip("List the serial ports again (after plugging a device in)")
        self.scenario_box = QtWidgets.QComboBox()
        self.scenario_box.setToolTip("Simulator scenario")
        for name, desc in scenario_names():
            self.scenario_box.addItem(name, name)
            self.scenario_box.setItemData(self.scenario_box.count() - 1, desc,
                                          QtCore.Qt.ItemDataRole.ToolTipRole)
        self.cups_spin = QtWidgets.QSpinBox()
        self.cups_spin.setRange(1, 16)
        self.cups_spin.setValue(4)
        self.cups_spin.setPrefix("cups ")
        self.rate_box = QtWidgets.QComboBox()
        for r in SIM_RATES:
            self.rate_box.addItem(f"{r} Hz", r)
        self.rate_box.setCurrentIndex(SIM_RATES.index(100))
        self.url_edit = QtWidgets.QLineEdit()
        self.url_edit.setPlaceholderText(
            "/dev/ttyACM0, COM3, socket://host:port, rfc2217://…, sim://…, replay:FILE|ID")
        self.url_edit.setToolTip("What will be opened: a device path or any pyserial URL")
        self.connect_button = QtWidgets.QPushButton("Connect")
        self.connect_button.setDefault(True)
        self.state_label = QtWidgets.QLabel("Not connected")
        self.state_label.setObjectName("linkState")
        self.state_label.setMargin(3)
        self.error_label = QtWidgets.QLabel("")
        self.error_label.setObjectName("linkError")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(_LEVEL_STYLE["bad"] + " padding: 3px;")
        self.error_label.setTextInteractionFlags(
            QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()

        row = QtWidgets.QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        for w in (QtWidgets.QLabel("Source"), self.source_box, self.refresh_button,
                  self.scenario_box, self.cups_spin, self.rate_box):
            row.addWidget(w)
        row.addWidget(self.url_edit, 1)
        row.addWidget(self.connect_button)
        row.addWidget(self.state_label)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.setSpacing(2)
        lay.addLayout(row)
        lay.addWidget(self.error_label)

        self.refresh_button.clicked.connect(self.refresh_ports)
        self.source_box.currentIndexChanged.connect(self._source_changed)
        for sig in (self.scenario_box.currentIndexChanged, self.cups_spin.valueChanged,
                    self.rate_box.currentIndexChanged):
            sig.connect(self._sim_changed)
        self.connect_button.clicked.connect(self._connect_clicked)
        self.url_edit.returnPressed.connect(self._connect_clicked)
        self.refresh_ports()
        self.show_state(LinkState.CLOSED, "Not connected")

    # ------------------------------------------------------------- choices
    def refresh_ports(self) -> None:
        """Re-list serial ports: "path — description (SN …)"; keeps the choice."""
        from firmware_bridge.ports import list_ports

        current = self.source_box.currentData()
        try:
            ports = list_ports()
        except Exception as exc:  # discovery must never take the window down
            log.warning("port discovery failed: %s", exc)
            ports = []
        self.source_box.blockSignals(True)
        self.source_box.clear()
        self.source_box.addItem("Simulator", SIMULATOR)
        for p in ports:
            text = p.path + (f" — {p.description}" if p.description else "")
            if p.serial_number:
                text += f" (SN {p.serial_number})"
            self.source_box.addItem(text, p.path)
            tip = ", ".join(x for x in (p.manufacturer or "", p.usb_id) if x)
            self.source_box.setItemData(self.source_box.count() - 1, tip,
                                        QtCore.Qt.ItemDataRole.ToolTipRole)
        self.source_box.addItem("Other URL…", OTHER_URL)
        i = self.source_box.findData(current)
        self.source_box.setCurrentIndex(i if i >= 0 else 0)
        self.source_box.blockSignals(False)
        self._source_changed()

    def ports_listed(self) -> list[str]:
        """Paths of the ports in the list (for tests)."""
        return [self.source_box.itemData(i) for i in range(self.source_box.count())
                if self.source_box.itemData(i) not in (SIMULATOR, OTHER_URL)]

    def _source_changed(self, *_: object) -> None:
        kind = self.source_box.currentData()
        is_sim = kind == SIMULATOR
        for w in (self.scenario_box, self.cups_spin, self.rate_box):
            w.setVisible(is_sim)
        if is_sim:
            self._sim_changed()
        elif kind == OTHER_URL:
            if self.url_edit.text().startswith("sim://") or not self.url_edit.text():
                self.url_edit.clear()
            self.url_edit.setFocus()
        elif kind:
            self.url_edit.setText(str(kind))

    def _sim_changed(self, *_: object) -> None:
        if self.source_box.currentData() == SIMULATOR:
            self.url_edit.setText(sim_url(self.scenario_box.currentData() or "normal",
                                          self.cups_spin.value(), int(self.rate_box.currentData())))

    def choose_url(self, url: str) -> None:
        """Select whatever matches ``url`` (a listed port, the simulator) or type it."""
        if url.startswith("sim://"):
            self.source_box.setCurrentIndex(self.source_box.findData(SIMULATOR))
            from urllib.parse import parse_qs, urlsplit
            parts = urlsplit(url)
            name = (parts.netloc + parts.path).strip("/") or "normal"
            q = parse_qs(parts.query)
            for box, value in ((self.scenario_box, name),
                               (self.rate_box, int(q.get("rate", ["100"])[0] or 100))):
                i = box.findData(value)
                if i >= 0:
                    box.setCurrentIndex(i)
            if "cups" in q and q["cups"][0].isdigit():
                self.cups_spin.setValue(int(q["cups"][0]))
        else:
            i = self.source_box.findData(url)
            self.source_box.setCurrentIndex(i if i >= 0 else self.source_box.findData(OTHER_URL))
        self.url_edit.setText(url)  # exactly what was asked, extra parameters included

    @property
    def url(self) -> str:
        return self.url_edit.text().strip()

    # ------------------------------------------------------------- actions
    def _connect_clicked(self) -> None:
        if self._connected:
            self.disconnectRequested.emit()
            return
        if not self.url:
            self.show_error("Type a port or URL first (e.g. /dev/ttyACM0 or sim://normal).")
            return
        self.connectRequested.emit(self.url)

    def set_connected(self, connected: bool) -> None:
        """Switch the button between Connect and Disconnect."""
        self._connected = connected
        self.connect_button.setText("Disconnect" if connected else "Connect")
        for w in (self.source_box, self.refresh_button, self.scenario_box, self.cups_spin,
                  self.rate_box, self.url_edit):
            w.setEnabled(not connected)

    def show_state(self, state: LinkState, detail: str = "") -> None:
        """Show a link state in words (with the source's own one-line detail)."""
        text, level = STATE_TEXT.get(state, (state.value, "idle"))
        if state is LinkState.ERROR and detail:
            text = detail
        self.state_label.setText(text)
        self.state_label.setToolTip(detail)
        self.state_label.setStyleSheet(_LEVEL_STYLE[level])
        if state in (LinkState.CONNECTED, LinkState.RECONNECTED):
            self.clear_error()

    def show_error(self, message: str) -> None:
        """A one-line problem the user can act on (never a traceback)."""
        self.error_label.setText(message)
        self.error_label.show()

    def clear_error(self) -> None:
        self.error_label.clear()
        self.error_label.hide()

    @property
    def error_text(self) -> str:
        return self.error_label.text() if not self.error_label.isHidden() else ""
