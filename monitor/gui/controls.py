"""Pump controls: start/stop/vent a cup (or all), its target band, recording,
and the prominent Release all.

The bar sends nothing itself: it validates what the therapist typed and
emits requests; the window sends the commands (without waiting for them)
and shows the outcome here, on the tile and in the status bar.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from monitor.units import DECIMALS, PER_KPA

from .tiles import clock

RELEASE_KEY = "F9"
ALL_CUPS = 0
#: Band step in the spin boxes, kPa (converted to the display unit).
BAND_STEP_KPA = 0.5

_LEVEL_STYLE = {
    "": "",
    "busy": "color: #000000; background: #fbc02d; padding: 2px 4px;",
    "ok": "color: #ffffff; background: #2e7d32; padding: 2px 4px;",
    "bad": "color: #ffffff; background: #c62828; padding: 2px 4px;",
}
_RELEASE_STYLE = (
    "QPushButton#releaseAll { background: #b71c1c; color: #ffffff; font-weight: bold; "
    "font-size: 12pt; padding: 4px 14px; border: 2px solid #ffffff; border-radius: 4px; }"
    "QPushButton#releaseAll:pressed { background: #7f0000; }"
    "QPushButton#releaseAll:disabled { background: #5d4037; color: #bcaaa4; "
    "border-color: #8d6e63; }"
)
_RECORD_STYLE = {
    False: "",
    True: "QPushButton#recordButton { background: #c62828; color: #ffffff; "
          "font-weight: bold; }",
}

#: (low kPa, high kPa) -> "" if acceptable, else why not (one line).
BandCheck = Callable[[float, float], str]


class ControlBar(QtWidgets.QWidget):
    """Cup selector, Start / Stop / Vent, band spin boxes and Set band, a
    status line, Record, and Release all [F9]."""

    commandRequested = QtCore.Signal(str, int)        # "start"|"stop"|"vent", cup (0 = all)
    bandRequested = QtCore.Signal(int, float, float)  # cup (0 = all), low kPa, high kPa
    releaseAllRequested = QtCore.Signal()
    recordRequested = QtCore.Signal()
    cupSelected = QtCore.Signal(int)                  # 0 = all

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.unit = "kPa"
        self._cups = 0
        self._reason = "Connect to a device first."
        self._band_check: BandCheck | None = None
        self._band_of: Callable[[int], tuple[float, float]] = lambda cup: (20.0, 25.0)

        self.cup_box = QtWidgets.QComboBox()
        self.cup_box.setToolTip("The cup the buttons act on (or click a tile)")
        self.cup_box.setMinimumContentsLength(7)
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setToolTip("Start regulating: the pump holds the target band")
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.stop_button.setToolTip("Stop the pump; the valve stays closed, the cup holds")
        self.vent_button = QtWidgets.QPushButton("Vent")
        self.vent_button.setToolTip("Open the valve: release the cup")
        self.low_spin = QtWidgets.QDoubleSpinBox()
        self.high_spin = QtWidgets.QDoubleSpinBox()
        for sp, what in ((self.low_spin, "low"), (self.high_spin, "high")):
            sp.setToolTip(f"Target band {what} edge (suction)")
            sp.setKeyboardTracking(False)
            sp.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight)
        self.unit_label = QtWidgets.QLabel("kPa")
        self.band_button = QtWidgets.QPushButton("Set band")
        self.band_button.setToolTip("Send the target band to the device; the monitor's "
                                    "alarms follow once the device accepts it")
        self.status_label = QtWidgets.QLabel("")
        self.status_label.setObjectName("commandStatus")
        self.status_label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored,
                                        QtWidgets.QSizePolicy.Policy.Preferred)
        self.record_button = QtWidgets.QPushButton("● Record…")
        self.record_button.setObjectName("recordButton")
        self.record_button.setToolTip("Record a session (therapist, patient, notes) into "
                                      "the session database")
        self.release_button = QtWidgets.QPushButton(f"RELEASE ALL [{RELEASE_KEY}]")
        self.release_button.setObjectName("releaseAll")
        self.release_button.setStyleSheet(_RELEASE_STYLE)
        self.release_button.setMinimumHeight(34)

        row = QtWidgets.QHBoxLayout(self)
        row.setContentsMargins(4, 0, 4, 0)
        row.setSpacing(4)
        for w in (self.cup_box, self.start_button, self.stop_button, self.vent_button):
            row.addWidget(w)
        row.addSpacing(8)
        row.addWidget(QtWidgets.QLabel("Band"))
        row.addWidget(self.low_spin)
        row.addWidget(QtWidgets.QLabel("–"))
        row.addWidget(self.high_spin)
        row.addWidget(self.unit_label)
        row.addWidget(self.band_button)
        row.addSpacing(6)
        row.addWidget(self.status_label, 1)
        row.addWidget(self.record_button)
        row.addWidget(self.release_button)

        self.cup_box.currentIndexChanged.connect(self._cup_changed)
        self.start_button.clicked.connect(lambda: self.commandRequested.emit("start", self.cup))
        self.stop_button.clicked.connect(lambda: self.commandRequested.emit("stop", self.cup))
        self.vent_button.clicked.connect(lambda: self.commandRequested.emit("vent", self.cup))
        self.band_button.clicked.connect(self._band_clicked)
        self.low_spin.valueChanged.connect(self._validate)
        self.high_spin.valueChanged.connect(self._validate)
        self.release_button.clicked.connect(self.releaseAllRequested)
        self.record_button.clicked.connect(self.recordRequested)
        self.set_unit("kPa")
        self.set_cups(0)
        self.set_command_reason(self._reason)

    # ------------------------------------------------------------------ API
    @property
    def cup(self) -> int:
        """Selected cup, 0 = all cups."""
        data = self.cup_box.currentData()
        return int(data) if data is not None else ALL_CUPS

    def set_band_check(self, check: BandCheck | None,
                       band_of: Callable[[int], tuple[float, float]] | None = None) -> None:
        """``check(low_kpa, high_kpa)`` says why a band is not acceptable ("" =
        fine); ``band_of(cup)`` gives a cup's current band (kPa) to show."""
        self._band_check = check
        if band_of is not None:
            self._band_of = band_of
        self._validate()

    def set_cups(self, cups: int) -> None:
        """The cups the device has (keeps the selection when it still exists)."""
        if cups == self._cups and self.cup_box.count():
            return
        current = self.cup
        self._cups = cups
        self.cup_box.blockSignals(True)
        self.cup_box.clear()
        self.cup_box.addItem("All cups", ALL_CUPS)
        for c in range(1, cups + 1):
            self.cup_box.addItem(f"Cup {c}", c)
        i = self.cup_box.findData(current)
        self.cup_box.setCurrentIndex(i if i >= 0 else 0)
        self.cup_box.blockSignals(False)
        self.show_band()

    def select_cup(self, cup: int) -> None:
        i = self.cup_box.findData(cup)
        if i >= 0:
            self.cup_box.setCurrentIndex(i)

    def set_unit(self, unit: str) -> None:
        """Show and take the band in ``unit``."""
        self.unit = unit
        factor = PER_KPA[unit]
        d = DECIMALS[unit]
        for sp in (self.low_spin, self.high_spin):
            sp.blockSignals(True)
            sp.setDecimals(d)
            sp.setRange(0.0, round(100.0 * factor, d))
            sp.setSingleStep(round(BAND_STEP_KPA * factor, d) or 1.0)
            sp.blockSignals(False)
        self.unit_label.setText(unit)
        self.show_band()

    def show_band(self, cup: int | None = None) -> None:
        """Fill the spin boxes with the band of ``cup`` (default: the selected
        cup; cup 1 for all cups)."""
        cup = self.cup if cup is None else cup
        lo, hi = self._band_of(cup or 1)
        factor = PER_KPA[self.unit]
        for sp, v in ((self.low_spin, lo), (self.high_spin, hi)):
            sp.blockSignals(True)
            sp.setValue(v * factor)
            sp.blockSignals(False)
        self._validate()

    def band_kpa(self) -> tuple[float, float]:
        """The band typed, kPa (0.01 kPa steps: the wire's resolution)."""
        factor = PER_KPA[self.unit]
        return (round(self.low_spin.value() / factor, 2), round(self.high_spin.value() / factor, 2))

    def set_band_values(self, low: float, high: float) -> None:
        """Type a band (display unit), as the user would."""
        self.low_spin.setValue(low)
        self.high_spin.setValue(high)

    def set_command_reason(self, reason: str) -> None:
        """Enable the pump controls ("") or disable them saying why."""
        self._reason = reason
        for w in (self.cup_box, self.start_button, self.stop_button, self.vent_button,
                  self.low_spin, self.high_spin, self.band_button, self.release_button):
            w.setEnabled(not reason)
        tips = {
            self.start_button: "Start regulating: the pump holds the target band",
            self.stop_button: "Stop the pump; the valve stays closed, the cup holds",
            self.vent_button: "Open the valve: release the cup",
            self.release_button: f"Vent every cup at once [{RELEASE_KEY}]",
        }
        for w, tip in tips.items():
            w.setToolTip(tip if not reason else f"{tip}. Not available: {reason}")
        self.band_button.setToolTip("Send the target band to the device" if not reason
                                    else f"Not available: {reason}")
        if reason:
            self.band_button.setEnabled(False)
        else:
            self._validate()

    @property
    def command_reason(self) -> str:
        return self._reason

    def show_status(self, text: str, level: str = "") -> None:
        """The outcome of the last command (or a hint), coloured by level."""
        self.status_label.setText(text)
        self.status_label.setToolTip(text)
        self.status_label.setStyleSheet(_LEVEL_STYLE.get(level, ""))

    def set_recording(self, recording: bool, elapsed_s: float | None = None,
                      enabled: bool = True, tooltip: str = "") -> None:
        """Show the Record button as idle, or as Stop with the elapsed time."""
        if recording:
            self.record_button.setText(f"■ Stop recording {clock(elapsed_s or 0.0)}")
        else:
            self.record_button.setText("● Record…")
        self.record_button.setStyleSheet(_RECORD_STYLE[recording])
        self.record_button.setEnabled(enabled)
        if tooltip:
            self.record_button.setToolTip(tooltip)

    # -------------------------------------------------------------- private
    def _cup_changed(self, *_: object) -> None:
        self.show_band()
        self.cupSelected.emit(self.cup)

    def band_problem(self) -> str:
        lo, hi = self.band_kpa()
        if not lo < hi:
            return "the band's low edge must be below its high edge"
        if self._band_check is not None:
            return self._band_check(lo, hi)
        return ""

    def _validate(self, *_: object) -> None:
        problem = self.band_problem()
        self.band_button.setEnabled(not problem and not self._reason)
        if problem:
            self.show_status(f"Band not valid: {problem}", "bad")
        elif self.status_label.text().startswith("Band not valid"):
            self.show_status("")

    def _band_clicked(self) -> None:
        if self.band_problem() or self._reason:
            return
        lo, hi = self.band_kpa()
        self.bandRequested.emit(self.cup, lo, hi)


def install_release_shortcut(window: QtWidgets.QWidget, bar: ControlBar) -> QtGui.QShortcut:
    """Release all from any cupmon window, the summary dialog included ([F9]);
    does nothing while the controls are disabled."""
    sc = QtGui.QShortcut(QtGui.QKeySequence(RELEASE_KEY), window)
    sc.setContext(QtCore.Qt.ShortcutContext.ApplicationShortcut)
    sc.activated.connect(lambda: bar.release_button.isEnabled() and bar.release_button.click())
    return sc
