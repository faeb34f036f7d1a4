"""``cupcal``: sensor calibration, pump tests and certificates for technicians."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cupcal", description=__doc__)
    p.add_subparsers(dest="command", metavar="{calibrate,pumptest,history}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.command:
        build_parser().print_help(sys.stderr)
        return 2
    return 0
