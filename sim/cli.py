"""``cupsim``: run a simulated cupping device over a pty, TCP or into a file.

Examples::

    cupsim --list
    cupsim normal --pty                       # prints /dev/pts/N, streams in real time
    cupsim leak --cups 8 --tcp 5333           # cupmon --port socket://127.0.0.1:5333
    cupsim normal --cups 16 --rate 1000 --duration 600 --out run.bin --truth run.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, NoReturn

from firmware_bridge.protocol import MAX_CUPS, MAX_RATE_HZ, MIN_RATE_HZ
from sim.device import FORMATS, ByteDevice, SimConfigError, VirtualDevice

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    """Bad flags or impossible parameters: one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the user asked for one line.
        raise _UsageError(f"{message} (cupsim --help shows the options)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cupsim", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", nargs="?", help="scenario to run (cupsim --list shows them)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--cups", type=int, default=4, help=f"number of cups, 1..{MAX_CUPS} (default 4)")
    p.add_argument("--rate", type=int, default=100,
                   help=f"sample rate in Hz, {MIN_RATE_HZ}..{MAX_RATE_HZ} (default 100)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="device seconds to run (default: the scenario's own; "
                        "--pty/--tcp without one run until Ctrl-C)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="device seconds per wall second for --pty/--tcp (default 1)")
    p.add_argument("--format", choices=FORMATS, default="binary",
                   help="binary protocol frames (default) or Arduino serial-plotter text")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--pty", action="store_true",
                     help="stream on a new pseudo-terminal; its path is the first stdout line")
    out.add_argument("--tcp", type=int, metavar="PORT",
                     help="serve on 127.0.0.1:PORT (0: a free port); the socket:// URL is the "
                          "first stdout line")
    out.add_argument("--out", metavar="FILE", help="write the byte stream to FILE as fast as possible")
    p.add_argument("--truth", metavar="FILE",
                   help="write the injected conditions as JSON Lines (device-clock seconds)")
    p.add_argument("--firmware", nargs="?", const="builtin", default=None, metavar="PATH",
                   help="run the unit on the reference C firmware core (compiled on demand): "
                   "no PATH = the bundled core; or a firmware source directory or a library "
                   "built by firmware_bridge.cfirmware")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="scenario parameter (repeatable), e.g. --param sensor_offset_kpa=1.2")
    return p


def _params(items: list[str]) -> dict[str, str]:
    """KEY=VALUE strings; the scenario checks names and coerces the values."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise _UsageError(f"--param {item!r} is not KEY=VALUE")
        params[key] = value.strip()
    return params


def _check(args: argparse.Namespace) -> None:
    if args.scenario is None:
        raise _UsageError("no scenario given (cupsim --list shows them)")
    if not (args.pty or args.tcp is not None or args.out):
        raise _UsageError("say where the device goes: --pty, --tcp PORT or --out FILE")
    if not 1 <= args.cups <= MAX_CUPS:
        raise _UsageError(f"--cups must be 1..{MAX_CUPS}, not {args.cups}")
    if not MIN_RATE_HZ <= args.rate <= MAX_RATE_HZ:
        raise _UsageError(f"--rate must be {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz, not {args.rate}")
    if args.duration is not None and not (args.duration > 0 and math.isfinite(args.duration)):
        raise _UsageError(f"--duration must be a positive number of seconds, not {args.duration:g}")
    if not (args.speed > 0 and math.isfinite(args.speed)):
        raise _UsageError(f"--speed must be a positive number, not {args.speed:g}")
    if args.tcp is not None and not 0 <= args.tcp <= 65535:
        raise _UsageError(f"--tcp port must be 0..65535, not {args.tcp}")


def _open_for_writing(path: str, what: str, mode: str) -> IO:
    try:
        return open(path, mode)
    except OSError as exc:
        raise _UsageError(f"cannot write the {what} file {path}: {exc.strerror or exc}") from None


def build_device(sim, args: argparse.Namespace) -> ByteDevice:
    """The device that speaks for ``sim``: the Python device, or with
    ``--firmware`` the reference C core (its command handling, regulator,
    interlock and framing) with the Python physics around it. The transports
    need only the :class:`sim.device.ByteDevice` protocol."""
    if getattr(args, "firmware", None):
        from firmware_bridge.cfirmware import FirmwareBuildError
        from sim.firmware_device import FirmwareDevice

        path = None if args.firmware == "builtin" else args.firmware
        try:
            return FirmwareDevice(sim, args.format, args.seed, firmware=path)
        except SimConfigError as exc:
            raise _UsageError(str(exc)) from None
        except FirmwareBuildError as exc:
            raise _UsageError(f"--firmware: {str(exc).splitlines()[0]}") from None
    return VirtualDevice(sim, args.format, args.seed)


def _truth_lines(sim, end_s: float) -> Iterator[str]:
    """Truth records of the conditions that started within the stream (device
    time < ``end_s``); ``t_end`` is null for one still holding at the end."""
    for rec in getattr(sim, "truth", ()):
        row = dict(rec.to_json())
        if row["t_start"] >= end_s:
            continue
        if row["t_end"] is not None and row["t_end"] > end_s:
            row["t_end"] = None
        yield json.dumps(row)


@contextmanager
def _stop_on_signals(stop) -> Iterator[None]:
    """SIGINT/SIGTERM call ``stop()`` (the run ends cleanly, exit 0)."""
    def handler(signum, frame) -> None:
        stop()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _run(args: argparse.Namespace) -> int:
    from sim.device import make_simulation
    from sim.transports import PtyTransport, TcpTransport, TransportError, write_capture

    _check(args)
    params = _params(args.param)
    try:
        sim = make_simulation(args.scenario, cups=args.cups, rate_hz=args.rate, seed=args.seed,
                              duration_s=args.duration, **params)
    except SimConfigError as exc:
        raise _UsageError(str(exc)) from None
    # A file ends with the scenario's own length; a live device runs until
    # --duration or Ctrl-C (after the script the cups simply stay as they are).
    duration = sim.duration_s if args.out else args.duration
    out = _open_for_writing(args.out, "output", "wb") if args.out else None
    truth = _open_for_writing(args.truth, "truth", "w") if args.truth else None
    device = build_device(sim, args)
    try:
        if out is not None:
            stop = threading.Event()
            with _stop_on_signals(stop.set):
                try:
                    summary = write_capture(device, out, args.format, duration_s=duration,
                                            stop=stop)
                except OSError as exc:
                    raise _UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from None
            print(f"cupsim: {summary.line()}", file=sys.stderr)
            end_s = device.t_s
        else:
            try:
                if args.pty:
                    transport = PtyTransport(device, args.speed, duration)
                    first = transport.path
                else:
                    transport = TcpTransport(device, args.tcp, args.speed, duration)
                    first = transport.url
            except (TransportError, OSError) as exc:
                raise _UsageError(str(exc)) from None
            print(first, flush=True)
            start_s = device.t_s
            with _stop_on_signals(transport.stop):
                transport.run()
            st = transport.stats
            dropped = (f", {st.bytes_dropped} dropped (no reader connected, or one too slow)"
                       if st.bytes_dropped else "")
            print(f"cupsim: {device.t_s - start_s:.3f} s of device time, "
                  f"{st.bytes_written} bytes written{dropped}", file=sys.stderr)
            end_s = device.t_s
        if truth is not None:
            for line in _truth_lines(sim, end_s):
                truth.write(line + "\n")
    finally:
        for f in (out, truth):
            if f is not None:
                f.close()
    return EXIT_OK


def _list() -> int:
    from sim.scenarios import list_scenarios

    rows = list_scenarios()
    width = max((len(name) for name, _ in rows), default=0)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.list:
            return _list()
        return _run(args)
    except _UsageError as exc:
        print(f"cupsim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before the handlers were installed
        return EXIT_OK
    except BrokenPipeError:  # stdout closed by the reader (e.g. | head)
        return EXIT_OK
    except Exception as exc:  # anything else: one line, not a traceback
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"cupsim: {type(exc).__name__}: {text}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
