"""``cupsim``: run a simulated cupping device over a pty, TCP or into a file."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cupsim", description=__doc__)
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        return 0
    print("cupsim: no scenario given (try --list)", file=sys.stderr)
    return 2
