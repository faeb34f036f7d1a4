"""The benchmark suite runs end to end (``--smoke``: every section, smallest
sizes) and writes every summary figure as a number.

No assertion on any figure: benchmarks measure, tests check behaviour. A
missed target is reported by ``python -m benchmarks``, not failed here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KEYS = ("decode_check_frames_per_s", "decode_check_vs_naive", "text_lines_per_s",
        "latency_p99_ms", "gui_fps", "gui_max_stall_ms", "replay_peak_rss_mb",
        "sim_realtime_factor")


@pytest.mark.slow
@pytest.mark.gui
@pytest.mark.timeout(600)
def test_smoke_benchmark_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    png = tmp_path / "scaling.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--json", str(out), "--png", str(png)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["errors"] == {}
    for key in KEYS:
        value = doc[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)
    # Machine description is part of every result (docs/performance.md quotes it).
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["numpy"]
    # The scaling plot is drawn where asked, and only there.
    assert png.stat().st_size > 10_000


def test_json_summary_keys_match_the_runner() -> None:
    from benchmarks.__main__ import SUMMARY_KEYS

    assert set(KEYS) <= set(SUMMARY_KEYS)
