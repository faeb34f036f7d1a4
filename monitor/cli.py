"""``cupmon``: live monitor for vacuum-pump cupping.

With no source it opens the GUI on the built-in simulator; ``--headless``
shows a terminal table instead (chosen automatically where there is no
display). ``cupmon sessions ...`` lists, shows and exports recorded sessions.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cupmon",
        description="Live monitor for vacuum-pump cupping: checks every cup's suction "
        "against its target band, raises alarms, records sessions.",
        epilog="Sessions: cupmon sessions {list,show,export} --help. "
        "Without --port/--sim/--replay the built-in simulator runs the 'normal' scenario.",
    )
    src = p.add_argument_group("source (one of)")
    g = src.add_mutually_exclusive_group()
    g.add_argument("--port", metavar="URL",
                   help="serial device or pyserial URL (/dev/ttyACM0, socket://host:port, "
                   "rfc2217://..., spy://..., sim://SCENARIO)")
    g.add_argument("--sim", metavar="SCENARIO",
                   help="built-in simulator scenario (cupsim --list shows them)")
    g.add_argument("--replay", metavar="PATH|ID",
                   help="replay a stored session (its ID) or a raw capture file")
    g.add_argument("--list-ports", action="store_true", help="list serial ports and exit")
    src.add_argument("--baud", type=int, default=None, help="serial baud rate (default 115200)")
    src.add_argument("--cups", type=int, default=4, help="simulator: number of cups (default 4)")
    src.add_argument("--rate", type=int, default=100, help="simulator: sample rate in Hz (default 100)")
    src.add_argument("--seed", type=int, default=0, help="simulator: random seed")
    src.add_argument("--speed", type=float, default=None,
                     help="simulator/replay speed factor (replay default: as fast as possible)")
    src.add_argument("--sim-param", action="append", default=[], metavar="KEY=VALUE",
                     help="extra simulator scenario parameter (repeatable)")

    mode = p.add_argument_group("mode and output")
    mode.add_argument("--headless", action="store_true", help="terminal view instead of the GUI")
    mode.add_argument("--events", metavar="FILE|-",
                      help="write every alarm event as a JSON line to FILE (- = stdout)")
    mode.add_argument("--summary", metavar="FILE", help="write the session summary as JSON at the end")
    mode.add_argument("--duration", type=float, default=None, metavar="S",
                      help="stop after S seconds of device time")
    mode.add_argument("--db", type=Path, default=None, metavar="PATH",
                      help="session database (default: the user's data directory)")
    mode.add_argument("--no-record", action="store_true", help="do not record the session")
    mode.add_argument("--therapist", default="", help="therapist label stored with the session")
    mode.add_argument("--patient", default="", help="pseudonymous patient label")
    mode.add_argument("--notes", default="", help="notes stored with the session")
    mode.add_argument("--screenshot", metavar="FILE.png", help="GUI: save a screenshot and exit")
    mode.add_argument("--after", type=float, default=5.0, metavar="S",
                      help="with --screenshot: seconds of live data first (default 5)")

    cfg = p.add_argument_group("checking")
    cfg.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    cfg.add_argument("--band", metavar="LOW,HIGH", help="target band in kPa for every cup (default 20,25)")
    cfg.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a configuration value, e.g. cups.2.band_high_kpa=24 (repeatable)")
    cfg.add_argument("--unit", choices=["kPa", "mmHg", "inHg", "cmH2O"], default=None,
                     help="display unit (default kPa)")
    return p


def display_available() -> bool:
    """True when a Qt window can be shown (or the caller asked for offscreen)."""
    if os.environ.get("QT_QPA_PLATFORM", "").startswith(("offscreen", "minimal", "vnc")):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _fail(msg: str, code: int = EXIT_FAIL) -> int:
    print(f"cupmon: {msg}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sessions":
        from monitor.sessions_cli import main as sessions_main

        return sessions_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)

    if args.list_ports:
        from firmware_bridge.ports import format_ports, list_ports

        print(format_ports(list_ports()))
        return EXIT_OK
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be positive")
    if args.speed is not None and args.speed <= 0:
        parser.error("--speed must be positive")
    if args.screenshot and args.headless:
        parser.error("--screenshot needs the GUI; drop --headless")
    if not (args.port or args.sim or args.replay):
        args.sim = "normal"

    try:
        if not args.headless and not display_available():
            if args.screenshot:
                os.environ["QT_QPA_PLATFORM"] = "offscreen"
            else:
                print("cupmon: no display found; running the terminal view "
                      "(cupmon --headless). Set DISPLAY to open the window.", file=sys.stderr)
                args.headless = True
        if args.headless:
            from monitor.headless import run_headless

            return run_headless(args)
        from monitor.gui.app import run_gui

        return run_gui(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # last line of defence: one line, no traceback
        from monitor.errors import user_message

        return _fail(user_message(exc))


if __name__ == "__main__":
    sys.exit(main())
