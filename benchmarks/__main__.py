"""``python -m benchmarks [--quick | --smoke] [--json FILE] [--only SECTION ...]``

Runs every section (see :mod:`benchmarks`), prints each section's table as it
finishes, then one summary table with the targets beside the figures. A
section that fails is recorded (its error in the table and in the JSON
``errors``) and the others carry on; the exit code is then 1. A missed
target is a finding, not a failure: the exit code stays 0.

Only the full run redraws ``docs/img/scaling.png``; shorter runs draw into
their temporary directory unless ``--png`` says where.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import decode_check, gui, latency, replay_memory, scaling, simspeed
from benchmarks.common import SIZES, Size, machine_info

#: Keys the JSON always carries (None when their section failed).
SUMMARY_KEYS = ("decode_check_frames_per_s", "decode_check_vs_naive", "text_lines_per_s",
                "latency_p99_ms", "gui_fps", "gui_max_stall_ms", "replay_peak_rss_mb",
                "sim_realtime_factor")

SECTIONS = ("decode_check", "latency", "gui", "replay_memory", "simspeed", "scaling")


def _runners(size: Size, work: Path, png: Path | None) -> dict[str, Callable[[], dict]]:
    return {
        "decode_check": lambda: decode_check.run(size, work),
        "latency": lambda: latency.run(size, work),
        "gui": lambda: gui.run(size),
        "replay_memory": lambda: replay_memory.run(size, work),
        "simspeed": lambda: simspeed.run(size, work),
        "scaling": lambda: scaling.run(size, work, png),
    }


_TABLES = {"decode_check": decode_check.format_table, "latency": latency.format_table,
           "gui": gui.format_table, "replay_memory": replay_memory.format_table,
           "simspeed": simspeed.format_table, "scaling": scaling.format_table}


def _num(x: object) -> float:
    return float(x) if isinstance(x, (int, float)) else math.nan


def summary_rows(res: dict[str, dict], errors: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, verdict) for the summary table."""
    rows: list[tuple[str, str, str, str]] = []

    def add(section: str, label: str, measured: Callable[[dict], str], target: str,
            ok: Callable[[dict], bool | None]) -> None:
        r = res.get(section)
        if r is None:
            what = f"error: {errors[section][:60]}" if section in errors else "not run"
            rows.append((label, what, target, "n/a"))
            return
        try:
            verdict = ok(r)
            rows.append((label, measured(r), target,
                         "-" if verdict is None else ("met" if verdict else "NOT MET")))
        except Exception as exc:  # a key missing from a section's result
            rows.append((label, f"error: {type(exc).__name__}: {exc}", target, "n/a"))

    add("decode_check", "decode+check, 8 cups, 4 KiB reads",
        lambda r: f"{r['decode_check_frames_per_s']:,.0f} frames/s "
                  f"({r['decode_check_mb_per_s']:.1f} MB/s)",
        ">= 1,000,000 frames/s", lambda r: r["decode_check_frames_per_s"] >= 1e6)
    add("decode_check", "  same vs per-frame Python baseline",
        lambda r: f"{r['decode_check_vs_naive']:.2f}x (naive {r['naive_frames_per_s']:,.0f}/s)",
        ">= 5x", lambda r: r["decode_check_vs_naive"] >= 5)
    add("decode_check", "  same with 64 KiB reads",
        lambda r: f"{r['decode_check_64k_frames_per_s']:,.0f} frames/s "
                  f"({r['decode_check_64k_vs_naive']:.2f}x naive)", "(context)", lambda r: None)
    add("decode_check", "  same by CPU time",
        lambda r: f"{r['decode_check_vs_naive_cpu']:.2f}x", "(context)", lambda r: None)
    add("decode_check", "  CPU per 8-cup frame",
        lambda r: f"decode {r['decode_us_per_frame']:.2f} + check {r['check_us_per_frame']:.2f} us "
                  f"(naive {r['naive_us_per_frame']:.2f} us)", "(context)", lambda r: None)
    add("decode_check", "  Decoder alone, 4 KiB reads",
        lambda r: f"{r['decode_only_frames_per_s']:,.0f} frames/s", "(context)", lambda r: None)
    add("decode_check", "text format decode+check",
        lambda r: f"{r['text_lines_per_s']:,.0f} lines/s ({r['text_vs_naive']:.2f}x per-line)",
        "(reported)", lambda r: None)
    add("latency", "alarm latency, 16 cups x 1 kHz pty",
        lambda r: f"p50 {r['latency_p50_ms']:.1f} / p99 {r['latency_p99_ms']:.1f} / max "
                  f"{r['latency_max_ms']:.1f} ms, {r['detected']}/{r['excursions']} found",
        "p99 <= 50 ms", lambda r: r["latency_p99_ms"] <= 50 and r["missed"] == 0)
    add("gui", "GUI redraw, 16 cups x 1 kHz, 30 s",
        lambda r: f"{r['gui_fps']:.1f} fps (naive {r['naive_fps']:.1f})", ">= 60 fps",
        lambda r: r["gui_fps"] >= 60)
    add("gui", "  longest GUI stall", lambda r: f"{r['gui_max_stall_ms']:.1f} ms", "<= 50 ms",
        lambda r: r["gui_max_stall_ms"] <= 50)
    add("replay_memory", "replay+record peak RSS",
        lambda r: f"{r['replay_peak_rss_mb']:.0f} MB ({r['session_s'] / 60:.3g} min session)",
        "<= 400 MB", lambda r: r["replay_peak_rss_mb"] <= 400)
    add("replay_memory", "  RSS by quarter of the session",
        lambda r: " / ".join(f"{v:.0f}" for v in r["replay_rss_quarters_mb"]) + " MB",
        "flat", lambda r: abs(r["replay_rss_growth_mb"]) <= 0.1 * r["replay_rss_quarters_mb"][0]
        + 10)
    add("replay_memory", "  database size",
        lambda r: f"{r['db_mb_per_hour']:.1f} MB per hour", "(reported)", lambda r: None)
    add("replay_memory", "  replay speed",
        lambda r: f"{r['replay_realtime_factor']:.1f}x real time, "
                  f"{r['recorder_dropped_samples']:,} samples dropped", "(reported)",
        lambda r: None)
    add("simspeed", "simulator, 16 cups x 1 kHz",
        lambda r: f"{r['sim_realtime_factor']:.0f}x real time", ">= 20x",
        lambda r: r["sim_realtime_factor"] >= 20)
    add("scaling", "scaling of cost with cups x rate",
        lambda r: f"R^2 {r['scaling_r2_cups']:.3f} (cups), {r['scaling_r2_rate']:.3f} (rate); "
                  f"{r['cost_per_mcs'] * 100:.0f} % core per M cup-samples/s", "linear",
        lambda r: r["scaling_r2"] >= 0.95)
    return rows


def format_summary(rows: list[tuple[str, str, str, str]]) -> str:
    w0 = max(len(r[0]) for r in rows) + 2
    w1 = max(len(r[1]) for r in rows) + 2
    w2 = max(len(r[2]) for r in rows) + 2
    out = [f"{'figure':<{w0}}{'measured':<{w1}}{'target':<{w2}}verdict"]
    out += [f"{a:<{w0}}{b:<{w1}}{c:<{w2}}{d}" for a, b, c, d in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks",
                                 description="cupmon benchmarks: speed, latency, memory, scaling")
    size_group = ap.add_mutually_exclusive_group()
    size_group.add_argument("--quick", action="store_true", help="short run (under a minute)")
    size_group.add_argument("--smoke", action="store_true",
                            help="smallest run of every section (for the test suite)")
    ap.add_argument("--json", type=Path, help="write the figures to this JSON file")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--png", type=Path,
                    help="scaling plot path (default: docs/img/scaling.png on a full run)")
    args = ap.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "quick" if args.quick else "full"]

    machine = machine_info()
    print(f"cupmon benchmarks ({size.name} run) on {machine['cores']} cores, {machine['cpu']}; "
          f"Python {machine['python']}, numpy {machine['numpy']}, PySide6/Qt "
          f"{machine['pyside6']}, pyqtgraph {machine['pyqtgraph']}; load average "
          f"{' '.join(str(x) for x in machine['loadavg'])}; commit {machine['commit']}"
          + (f" with {machine['uncommitted_code_files']} uncommitted code files"
             if machine["uncommitted_code_files"] else ""), flush=True)
    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cupmon-bench-") as tmp:
        work = Path(tmp)
        png = args.png or (scaling.DEFAULT_PNG if size.name == "full" else work / "scaling.png")
        runners = _runners(size, work, png)
        for name in args.only or SECTIONS:
            t0 = time.perf_counter()
            print(f"\n== {name} ==", flush=True)
            try:
                results[name] = runners[name]()
                print(_TABLES[name](results[name]), flush=True)
            except Exception as exc:  # record and carry on with the other sections
                errors[name] = f"{type(exc).__name__}: {exc}"
                print(f"FAILED: {errors[name]}", flush=True)
                traceback.print_exc(file=sys.stderr)
            timings[name] = time.perf_counter() - t0
    total = time.perf_counter() - t_all
    machine["loadavg_end"] = [round(x, 2) for x in __import__("os").getloadavg()]

    print(f"\n== summary ({size.name} run, {total:.0f} s; load average at the end "
          f"{' '.join(str(x) for x in machine['loadavg_end'])}) ==")
    print(format_summary(summary_rows(results, errors)))
    if errors:
        print(f"\nsections that failed: {', '.join(errors)}")

    if args.json:
        flat: dict = {}
        for r in results.values():
            flat.update({k: v for k, v in r.items() if isinstance(v, (int, float, str))})
        doc = {key: (v if isinstance(v := flat.get(key), (int, float))
                     and math.isfinite(_num(v)) else None) for key in SUMMARY_KEYS}
        doc.update(size=size.name, machine=machine, seconds=total, section_seconds=timings,
                   errors=errors, sections=results)
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
