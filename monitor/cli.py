"""``cupmon``: live monitor for vacuum-pump cupping (GUI, or ``--headless``)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cupmon", description=__doc__)
    p.add_argument("--headless", action="store_true", help="terminal view instead of the GUI")
    p.add_argument("--list-ports", action="store_true", help="list serial ports and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
