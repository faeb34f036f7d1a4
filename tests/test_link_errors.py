"""Opening errors: each becomes one line that says what to do."""

from __future__ import annotations

import errno
import os
import socket

import pytest
import serial
from test_link_fakes import Collect, PtyDevice

from firmware_bridge.errors import (
    LinkError,
    PermissionDenied,
    PortBusy,
    PortNotFound,
    classify_open_error,
    device_path,
)
from firmware_bridge.link import SerialLink
from firmware_bridge.messages import LinkState

pytestmark = pytest.mark.timeout(30)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text
    return text


def test_missing_port_is_port_not_found_with_a_useful_line(tmp_path):
    missing = str(tmp_path / "ttyUSB9")
    c = Collect()
    link = SerialLink(missing)
    link.add_listener(c)
    with pytest.raises(PortNotFound) as exc, link:
        pass
    text = _one_line(exc.value)
    assert text.startswith(f"no serial port {missing}")
    assert "ports found:" in text or "no serial ports were found" in text
    # The failure was also published, and the with-block released the listeners.
    assert c.stopped
    assert [e.message for e in c.events(LinkState.ERROR)] == [text]


def test_port_not_found_lists_what_exists_or_says_none():
    assert "ports found: /dev/ttyACM0, /dev/ttyUSB0" in str(
        PortNotFound("/dev/ttyUSB1", ["/dev/ttyACM0", "/dev/ttyUSB0"]))
    assert "no serial ports were found" in str(PortNotFound("/dev/ttyUSB1", []))


def test_second_exclusive_open_is_port_busy():
    dev = PtyDevice()
    first, second = SerialLink(dev.path), SerialLink(dev.path)
    try:
        first.start()
        with pytest.raises(PortBusy) as exc:
            second.start()
        assert dev.path in _one_line(exc.value) and "another program" in str(exc.value)
        assert first.wait_connected(5)  # the holder is unaffected
    finally:
        second.stop()
        first.stop()
        dev.close()
    # Once released, the port opens again.
    dev2 = PtyDevice()
    try:
        with SerialLink(dev2.path) as again:
            assert again.wait_connected(5)
    finally:
        dev2.close()


@pytest.mark.parametrize("url, path", [
    ("/dev/ttyACM0", "/dev/ttyACM0"),
    ("COM3", "COM3"),
    ("spy:///dev/ttyUSB0?file=trace.txt", "/dev/ttyUSB0"),
    ("socket://127.0.0.1:5333", None),
    ("sim://normal?cups=2", None),
    ("loop://", None),
])
def test_device_path_is_the_file_behind_a_url(url, path):
    assert device_path(url) == path


def test_unknown_url_scheme_is_explained():
    with pytest.raises(LinkError) as exc:
        SerialLink("bogus://x").start()
    assert "unknown port URL scheme 'bogus://'" in _one_line(exc.value)


def test_refused_socket_url_says_so():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(LinkError) as exc:
        SerialLink(f"socket://127.0.0.1:{port}").start()
    assert "connection refused" in _one_line(exc.value)


def test_regular_file_is_not_a_serial_port(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(LinkError) as exc:
        SerialLink(str(f)).start()
    assert "is not a serial port" in _one_line(exc.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root may open anything: no permission error to provoke")
def test_real_permission_error_is_permission_denied(tmp_path):
    f = tmp_path / "ttyFAKE"
    f.write_text("")
    f.chmod(0)
    with pytest.raises(PermissionDenied) as exc:
        SerialLink(str(f)).start()
    assert "permission denied" in _one_line(exc.value)


def test_permission_error_names_the_device_group():
    # The exception exactly as pyserial raises it when os.open() gets EACCES.
    exc = serial.SerialException(errno.EACCES, "could not open port /dev/ttyUSB0: "
                                 "[Errno 13] Permission denied: '/dev/ttyUSB0'")
    err = classify_open_error("/dev/ttyUSB0", exc)
    assert isinstance(err, PermissionDenied)
    text = str(PermissionDenied("/dev/ttyUSB0", "dialout"))
    assert "sudo usermod -aG dialout $USER" in text and "log in again" in text


def test_lock_failure_text_is_port_busy():
    exc = serial.SerialException(errno.EAGAIN, "Could not exclusively lock port /dev/ttyACM0: "
                                 "[Errno 11] Resource temporarily unavailable")
    assert isinstance(classify_open_error("/dev/ttyACM0", exc), PortBusy)
