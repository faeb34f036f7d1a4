"""The device panel: what is connected (serial, firmware, rate, sensor,
calibration) and how the link is doing (frames, errors, losses, reconnects)."""

from __future__ import annotations

from PySide6 import QtWidgets

from firmware_bridge.messages import DeviceInfo, LinkStats
from firmware_bridge.protocol import InfoFlags, SensorModel

_FIELDS = (
    ("source", "Source"), ("link", "Link"), ("serial", "Serial"), ("firmware", "Firmware"),
    ("cups", "Cups"), ("rate", "Rate"), ("sensor", "Sensor"), ("calibration", "Calibration"),
    ("format", "Format"), ("frames", "Frames"), ("errors", "CRC errors"),
    ("lost", "Frames lost"), ("reconnects", "Reconnects"), ("overruns", "Dropped blocks"),
    ("display", "Display"),
)


def sensor_name(model: int) -> str:
    try:
        return SensorModel(model).name
    except ValueError:
        return f"model {model}"


def calibration_text(info: DeviceInfo) -> str:
    """Where the sensor calibration comes from, in words."""
    if info.flags & InfoFlags.SIMULATED:
        return "simulated device"
    if info.flags & InfoFlags.CAL_ON_DEVICE:
        return "calibrated (stored on device)"
    return "not calibrated – run cupcal"


class DevicePanel(QtWidgets.QGroupBox):
    """A form of device facts and link counters; :meth:`show_device` refreshes it."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Device", parent)
        form = QtWidgets.QFormLayout(self)
        form.setContentsMargins(6, 4, 6, 4)
        form.setVerticalSpacing(2)
        self.values: dict[str, QtWidgets.QLabel] = {}
        for key, label in _FIELDS:
            v = QtWidgets.QLabel("–")
            v.setWordWrap(True)
            self.values[key] = v
            form.addRow(label, v)

    def text(self, key: str) -> str:
        return self.values[key].text()

    def show_device(self, *, source: str = "", link: str = "", info: DeviceInfo | None = None,
                    stats: LinkStats | None = None, fmt: str = "", display: str = "",
                    calibration: str = "") -> None:
        """Refresh every field; ``calibration`` (what is in force, from the
        session database) is shown after the INFO-based wording."""
        v = self.values
        # Zero-width spaces let a long URL wrap at its separators (the panel is
        # narrow and never scrolls sideways).
        text = source or "–"
        for sep in ("?", "&", "=", "_", ","):
            text = text.replace(sep, sep + "\u200b")
        v["source"].setText(text)
        v["link"].setText(link or "–")
        if info is not None:
            v["serial"].setText(info.serial or "–")
            v["firmware"].setText(info.firmware_str)
            v["cups"].setText(str(info.cups))
            v["rate"].setText(f"{info.rate_hz} Hz")
            v["sensor"].setText(sensor_name(info.sensor_model)
                                + (f", {info.adc_bits}-bit ADC" if info.adc_bits else ""))
            v["calibration"].setText(calibration_text(info)
                                     + (f"; records: {calibration}" if calibration else ""))
        else:
            for k in ("serial", "firmware", "cups", "rate", "sensor"):
                v[k].setText("–")
            v["calibration"].setText(f"records: {calibration}" if calibration else "–")
        v["format"].setText(fmt or "–")
        if stats is not None:
            v["frames"].setText(f"{stats.frames_ok:,} ({stats.samples:,} samples)")
            v["errors"].setText(f"{stats.crc_errors:,}"
                                + (f", {stats.bytes_discarded:,} bytes skipped"
                                   if stats.bytes_discarded else ""))
            v["lost"].setText(f"{stats.frames_lost:,}")
            v["reconnects"].setText(str(stats.reconnects))
            v["overruns"].setText(str(sum(stats.listener_overruns.values())))
        v["display"].setText(display or "–")
