"""``cupsim --firmware``: a whole session on the reference C core, checked by the monitor."""

from __future__ import annotations

import subprocess
import sys

from firmware_bridge.codec import Decoder
from monitor.pipeline import MonitorPipeline


def test_over_suction_session_on_the_c_core_trips_the_interlock(tmp_path):
    out = tmp_path / "fw.bin"
    r = subprocess.run([sys.executable, "-m", "sim.cli", "over_suction", "--cups", "4",
                        "--rate", "100", "--duration", "45", "--firmware", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    dec = Decoder()
    res = dec.feed(out.read_bytes())
    assert dec.stats.crc_errors == 0 and dec.stats.frames_lost == 0
    pipe = MonitorPipeline()
    for item in res.ordered():
        (pipe.on_block if hasattr(item, "suction") else pipe.on_message)(item)
    pipe.stop()
    raised = {(e.condition, e.cup) for e in pipe.events() if e.event == "raised"}
    assert ("over_suction", 2) in raised
    assert ("interlock", 2) in raised
    # Healthy cups were regulated into the band by the C regulator.
    for c in (1, 3, 4):
        assert not any(cup == c for _, cup in raised)


def test_bad_firmware_path_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sim.cli", "normal", "--firmware",
                        str(tmp_path / "nope"), "--out", str(tmp_path / "x.bin")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
