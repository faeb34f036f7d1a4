"""GUI redraw: runs the GUI engineer's :func:`benchmarks.gui_redraw.run` (16
cups x 1 kHz, 30 s window, offscreen) in a child process and returns its
figures (gui_fps, gui_max_stall_ms, naive_fps, ...).

A child process because Qt can abort the interpreter (the PySide6 6.12
``arrayToQPath`` abort in docs/architecture.md is one) and because its
memory must not count in the other sections: a failure here is recorded as
an error and the other sections carry on.
"""

from __future__ import annotations

import json
import sys

from benchmarks.common import Size, run_child


def run(size: Size) -> dict:
    """gui_redraw.run(quick) in a child with QT_QPA_PLATFORM=offscreen."""
    return run_child("benchmarks.gui", ["--child", "quick" if size.gui_quick else "full"],
                     timeout=240 if size.gui_quick else 480,
                     env={"QT_QPA_PLATFORM": "offscreen"})


def format_table(r: dict) -> str:
    try:
        from benchmarks.gui_redraw import format_table as gui_table

        return gui_table(r)
    except Exception:  # the module's own table may change; fall back to the keys we need
        return (f"GUI redraw: {r.get('gui_fps', float('nan')):.1f} fps, longest stall "
                f"{r.get('gui_max_stall_ms', float('nan')):.1f} ms; naive "
                f"{r.get('naive_fps', float('nan')):.1f} fps")


def _child(mode: str) -> int:
    from benchmarks.gui_redraw import run as gui_run

    r = gui_run(quick=mode == "quick")
    print(json.dumps({k: v for k, v in r.items() if isinstance(v, (int, float, str))}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(_child(sys.argv[2]))
    from benchmarks.common import SIZES

    print(format_table(run(SIZES["quick" if "--quick" in sys.argv else "full"])))
