"""Serial port discovery: what ``cupmon --list-ports`` prints."""

from __future__ import annotations

import re
from dataclasses import dataclass

from serial.tools import list_ports as _list_ports


@dataclass(frozen=True, slots=True)
class PortInfo:
    """One serial port the OS knows about. ``vid``/``pid`` are USB ids (None if not USB)."""

    path: str
    description: str = ""
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    manufacturer: str | None = None

    @property
    def usb_id(self) -> str:
        """``VID:PID`` in 4-digit hex (``2341:0043``), or "" for non-USB ports."""
        if self.vid is None or self.pid is None:
            return ""
        return f"{self.vid:04x}:{self.pid:04x}"


def _natural_key(path: str) -> list[object]:
    # /dev/ttyUSB2 before /dev/ttyUSB10, COM3 before COM10.
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path)]


def list_ports() -> list[PortInfo]:
    """Serial ports present now, sorted by path (numbers in numeric order)."""
    ports = []
    for p in _list_ports.comports():
        desc = p.description if p.description and p.description != "n/a" else ""
        ports.append(PortInfo(path=p.device, description=desc, vid=p.vid, pid=p.pid,
                              serial_number=p.serial_number or None,
                              manufacturer=p.manufacturer or None))
    return sort_ports(ports)


def sort_ports(ports: list[PortInfo]) -> list[PortInfo]:
    """``ports`` by path, numbers compared as numbers (ttyUSB2 before ttyUSB10)."""
    return sorted(ports, key=lambda p: _natural_key(p.path))


def format_ports(ports: list[PortInfo]) -> str:
    """A plain-text table of ``ports``; "no serial ports found" when empty."""
    if not ports:
        return "no serial ports found"
    header = ("PORT", "USB ID", "DESCRIPTION", "MANUFACTURER", "SERIAL")
    rows = [(p.path, p.usb_id or "-", p.description or "-", p.manufacturer or "-",
             p.serial_number or "-") for p in ports]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)
