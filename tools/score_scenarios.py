#!/usr/bin/env python3
"""Score every simulator scenario's alarms against its ground truth and print
the Markdown table of docs/alarms.md, "Measured alarm correctness".

Each run goes through the real byte path (virtual device -> decoder ->
MonitorPipeline) in device time; see monitor/scoring.py. Usage::

    .venv/bin/python tools/score_scenarios.py                 # seed 0, + variants, + normal hour
    .venv/bin/python tools/score_scenarios.py --seeds 0 1 2 --no-hour --out table.md

Exit status 0 when every run passes, 1 otherwise (the failures on stderr).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from monitor.scoring import VARIANTS, ScoreReport, run_scenario, table


def _runs(seeds: list[int], variants: bool) -> list[tuple[str, str, int, dict]]:
    """(label, scenario, seed, params) of every run to score."""
    from sim.scenarios import list_scenarios

    out = []
    for seed in seeds:
        tag = "" if len(seeds) == 1 else f" (seed {seed})"
        out += [(name + tag, name, seed, {}) for name, _ in list_scenarios()]
        if variants:
            out += [(label + tag, sc, seed, dict(p)) for label, (sc, p) in VARIANTS.items()]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    ap.add_argument("--cups", type=int, default=4, help="cups (default 4)")
    ap.add_argument("--rate", type=int, default=100, help="sample rate, Hz (default 100)")
    ap.add_argument("--no-variants", action="store_true", help="registered scenarios only")
    ap.add_argument("--no-hour", action="store_true",
                    help="skip the one-hour normal runs (seeds 0 and 1)")
    ap.add_argument("--out", type=Path, help="also write the table to this file")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    reports: list[ScoreReport] = []
    notes: list[str] = []
    for label, scenario, seed, params in _runs(args.seeds, not args.no_variants):
        rep, _ = run_scenario(scenario, cups=args.cups, rate_hz=args.rate, seed=seed,
                              label=label, **params)
        reports.append(rep)
    if not args.no_hour:
        for seed in (0, 1):
            rep, cap = run_scenario("normal", cups=args.cups, rate_hz=args.rate, seed=seed,
                                    duration_s=3600.0, label=f"normal, 1 h (seed {seed})")
            notes.append(f"normal, 1 h (seed {seed}): {cap.duration_s:.0f} s, longest time a "
                         f"cup was on {cap.longest_on_s:.0f} s (dwell advisory at 600 s)")
            reports.append(rep)
    text = table(reports)
    records = sum(len(r.matches) for r in reports)
    failed = [(r.scenario, f) for r in reports for f in r.failures]
    summary = (f"{len(reports)} runs, {records} truth records, "
               f"{sum(len(r.extras) for r in reports)} extra alarms, "
               f"{len(failed)} failures ({time.perf_counter() - started:.1f} s)")
    print(text)
    print()
    for line in notes:
        print(line)
    print(summary)
    if args.out is not None:
        args.out.write_text(text + "\n")
    for scenario, line in failed:
        print(f"FAIL {scenario}: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
