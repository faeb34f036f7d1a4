"""Simulator speed: real-time factor of ``cupsim normal --cups 16 --rate 1000
--duration D --out FILE``, i.e. :func:`sim.transports.write_capture` (engine
physics, sensor, regulator, framing and file writes).

Measured in process (the figure ``cupsim`` prints on its summary line), and
in the full run also through the real ``cupsim`` command (its own summary
line, plus the wall time of the whole command with interpreter start-up).

Run alone: ``python -m benchmarks.simspeed [--size quick]``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import SIZES, Size, make_capture, section_main

CUPS = 16
RATE_HZ = 1000
_SUMMARY = re.compile(r"\(([\d.]+)x real time\)")


def run(size: Size, workdir: Path) -> dict:
    out = workdir / "sim16.bin"
    g = make_capture(out, "normal", CUPS, RATE_HZ, size.sim_s, "binary")
    r = {"cups": CUPS, "rate_hz": RATE_HZ, "sim_s": g["sim_s"], "sim_frames": g["frames"],
         "sim_bytes": g["bytes"], "sim_wall_s": g["wall_s"],
         "sim_realtime_factor": g["realtime_factor"]}
    out.unlink()
    if size.name == "full":
        # The installed command next to this interpreter, else the module behind it.
        exe = Path(sys.executable).with_name("cupsim")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sim.cli"]
        t0 = time.perf_counter()
        proc = subprocess.run(
            [*cmd, "normal", "--cups", str(CUPS), "--rate", str(RATE_HZ),
             "--duration", f"{size.sim_s:g}", "--out", str(out)],
            capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        m = _SUMMARY.search(proc.stderr)
        if proc.returncode == 0 and m:
            r["cupsim_cli_realtime_factor"] = float(m.group(1))
            r["cupsim_cli_command_wall_s"] = wall
        else:
            r["cupsim_cli_error"] = proc.stderr.strip()[-300:] or f"exit {proc.returncode}"
    return r


def format_table(r: dict) -> str:
    line = (f"Simulator: normal, {r['cups']} cups x {r['rate_hz']} Hz, {r['sim_s']:.0f} s -> "
            f"{r['sim_frames']:,} frames, {r['sim_bytes'] / 1e6:.1f} MB in {r['sim_wall_s']:.2f} s: "
            f"{r['sim_realtime_factor']:.0f}x real time")
    if "cupsim_cli_realtime_factor" in r:
        line += (f"\n  cupsim --out (its summary line): {r['cupsim_cli_realtime_factor']:.0f}x; "
                 f"whole command incl. start-up {r['cupsim_cli_command_wall_s']:.1f} s")
    return line


def main(argv: list[str] | None = None) -> int:
    return section_main(__doc__, run, format_table, SIZES, argv)


if __name__ == "__main__":
    sys.exit(main())
