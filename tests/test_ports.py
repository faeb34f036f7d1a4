"""Port discovery and the --list-ports table."""

from __future__ import annotations

from firmware_bridge.ports import PortInfo, format_ports, list_ports, sort_ports


def test_list_ports_runs_and_is_sorted():
    ports = list_ports()
    assert all(isinstance(p, PortInfo) and p.path for p in ports)
    assert ports == sort_ports(list(reversed(ports)))
    assert len({p.path for p in ports}) == len(ports)


def test_ports_sort_numbers_as_numbers():
    paths = ["/dev/ttyUSB10", "COM3", "/dev/ttyACM0", "/dev/ttyUSB2", "COM10"]
    got = [p.path for p in sort_ports([PortInfo(x) for x in paths])]
    assert got == ["/dev/ttyACM0", "/dev/ttyUSB2", "/dev/ttyUSB10", "COM3", "COM10"]


def test_format_ports_table():
    ports = [
        PortInfo("/dev/ttyACM0", "Arduino Uno", 0x2341, 0x0043, "75833353934351F0C1E1",
                 "Arduino (www.arduino.cc)"),
        PortInfo("/dev/ttyS0"),
    ]
    lines = format_ports(ports).splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["PORT", "USB", "ID", "DESCRIPTION", "MANUFACTURER", "SERIAL"]
    assert lines[1].startswith("/dev/ttyACM0")
    assert "2341:0043" in lines[1] and "Arduino Uno" in lines[1] and "75833353934351F0C1E1" in lines[1]
    assert lines[2].split() == ["/dev/ttyS0", "-", "-", "-", "-"]
    # Columns line up: every row's second column starts where the header's does.
    col = lines[0].index("USB ID")
    assert lines[1][col:col + 9] == "2341:0043" and lines[2][col] == "-"


def test_usb_id_is_four_digit_hex():
    assert PortInfo("COM3", vid=0x403, pid=0x6001).usb_id == "0403:6001"
    assert PortInfo("COM3").usb_id == ""


def test_format_ports_empty():
    assert format_ports([]) == "no serial ports found"
