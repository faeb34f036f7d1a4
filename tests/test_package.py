"""The core must import without Qt and without a display."""

import subprocess
import sys

import pytest

CORE = ["firmware_bridge", "firmware_bridge.protocol", "firmware_bridge.messages",
        "firmware_bridge.listener", "monitor", "sim"]


def test_core_imports_without_qt():
    code = (
        "import sys, importlib\n"
        f"for m in {CORE!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'shiboken'))]\n"
        "assert not bad, bad\n"
    )
    env = {"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": ""}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("cmd", ["cupmon", "cupsim", "cupcal"])
def test_console_scripts_have_help(cmd):
    import shutil
    exe = shutil.which(cmd) or str(__import__("pathlib").Path(sys.executable).parent / cmd)
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout and cmd in r.stdout


def test_crc_check_value():
    from firmware_bridge.protocol import crc16_ccitt_false
    assert crc16_ccitt_false(b"123456789") == 0x29B1
