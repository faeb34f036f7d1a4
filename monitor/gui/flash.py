"""One clock for every flashing alarm indicator, so the banner and the tiles
flash in step (IEC 60601-1-8: high 1.4-2.8 Hz, medium 0.4-0.8 Hz)."""

from __future__ import annotations

from PySide6 import QtCore

from .style import flash_hz


class Flasher(QtCore.QObject):
    """Phase of the flashing indicators, one timer per flashing severity.

    Each phase lasts half a period (duty cycle 50 %, inside the standard's
    20-60 %). ``toggled(severity)`` is emitted at every phase change.
    """

    toggled = QtCore.Signal(str)

    def __init__(self, parent: QtCore.QObject | None = None,
                 severities: tuple[str, ...] = ("high", "medium")) -> None:
        super().__init__(parent)
        self._on: dict[str, bool] = {}
        self._timers: dict[str, QtCore.QTimer] = {}
        for sev in severities:
            hz = flash_hz(sev)
            if hz <= 0:
                continue
            timer = QtCore.QTimer(self)
            timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
            timer.setInterval(int(round(500.0 / hz)))
            timer.timeout.connect(lambda s=sev: self._toggle(s))
            timer.start()
            self._timers[sev] = timer
            self._on[sev] = True

    def _toggle(self, severity: str) -> None:
        self._on[severity] = not self._on[severity]
        self.toggled.emit(severity)

    def is_on(self, severity: str) -> bool:
        """True in the bright phase; always True for steady severities."""
        return self._on.get(severity, True)

    def interval_ms(self, severity: str) -> int | None:
        """Half period of ``severity``'s flash, ms (None: steady)."""
        t = self._timers.get(severity)
        return None if t is None else t.interval()
