"""Scaling: decode + check cost and memory against cups (1, 4, 8, 16 at
1 kHz) and sample rate (100, 500, 1000, 2000 Hz at 8 cups).

Each point is a ``normal`` capture of at least ``scaling_s`` x 1000 frames,
streamed from the file in 4 KiB reads through Decoder + MonitorPipeline in a
child process of its own, so its peak RSS belongs to that point alone. Cost is
CPU seconds per second of data (1.0 = one core busy at real time); a straight
line through (cup-samples per second, cost) shows linear growth, and its fit
(R^2, cost per million cup-samples) is reported. Memory: the child's peak RSS
and its growth over the RSS after imports (the working memory of decoding and
checking, which depends on the block size, not on how long the data is).

Writes ``docs/img/scaling.png`` through :mod:`benchmarks.plot` (QPainter,
offscreen; matplotlib is not a dependency).

Run alone: ``python -m benchmarks.scaling [--size quick] [--png PATH]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    SIZES,
    Size,
    Stopwatch,
    machine_info,
    make_capture,
    peak_rss_mb,
    rss_mb,
    run_child,
)

CUPS_AXIS = (1, 4, 8, 16)
RATE_AXIS = (100, 500, 1000, 2000)
CHUNK = 4096
DEFAULT_PNG = Path(__file__).resolve().parent.parent / "docs" / "img" / "scaling.png"


def points() -> list[tuple[int, int]]:
    """(cups, rate) of every point, each once."""
    pts = [(c, 1000) for c in CUPS_AXIS] + [(8, r) for r in RATE_AXIS]
    return list(dict.fromkeys(pts))


def linear_fit(x: list[float], y: list[float]) -> dict:
    """Least-squares y = a + b x: intercept, slope and R^2."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((xi - mx) ** 2 for xi in x)
    sxy = sum((xi - mx) * (yi - my) for xi, yi in zip(x, y, strict=True))
    b = sxy / sxx if sxx else 0.0
    a = my - b * mx
    ss_res = sum((yi - a - b * xi) ** 2 for xi, yi in zip(x, y, strict=True))
    ss_tot = sum((yi - my) ** 2 for yi in y)
    return {"intercept": a, "slope": b, "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0}


def run(size: Size, workdir: Path, png: Path | None = DEFAULT_PNG) -> dict:
    rows = []
    for cups, rate in points():
        duration = size.scaling_s * max(1.0, 1000.0 / rate)  # >= scaling_s x 1000 frames
        cap = workdir / f"scale_{cups}x{rate}.bin"
        make_capture(cap, "normal", cups, rate, duration, "binary")
        # Best of `repeats` runs by CPU cost: one disturbed point (another
        # process's burst) would otherwise bend the fitted line.
        runs = [run_child("benchmarks.scaling", ["--child", str(cap), str(cups), str(rate),
                                                 str(duration)], timeout=600)
                for _ in range(max(1, size.repeats))]
        cap.unlink()
        rows.append(min(runs, key=lambda r: r["cost_cpu_per_s"]))
    # At fixed 4 KiB reads the cost is blocks x (fixed cost per block) + samples
    # x (cost per sample), and both counts are proportional to the rate at fixed
    # cups and linear in the cups at a fixed rate: so each axis is fitted on its own.
    by_cups = [r for r in rows if r["rate_hz"] == 1000]
    by_rate = [r for r in rows if r["cups"] == 8]
    m = machine_info()
    out = {"machine": f"{m['cores']} cores, {m['cpu']}", "points": rows, "chunk_bytes": CHUNK}
    for axis, sel, key in (("cups", by_cups, "cups"), ("rate", by_rate, "rate_hz")):
        xs = [float(r[key]) for r in sel]
        out[f"fit_{axis}"] = linear_fit(xs, [r["cost_cpu_per_s"] for r in sel])
        out[f"fit_{axis}_decode"] = linear_fit(xs, [r["decode_cost_cpu_per_s"] for r in sel])
    out["scaling_r2_cups"] = out["fit_cups"]["r2"]
    out["scaling_r2_rate"] = out["fit_rate"]["r2"]
    out["scaling_r2"] = min(out["scaling_r2_cups"], out["scaling_r2_rate"])
    # Cost of a million cup-samples per second of data at 8 cups (CPU s per s).
    out["cost_per_mcs"] = out["fit_rate"]["slope"] * 1e6 / 8
    if png is not None:
        try:
            json_path = workdir / "scaling.json"
            json_path.write_text(json.dumps(out))
            run_child("benchmarks.plot", [str(json_path), str(png)], timeout=120,
                      env={"QT_QPA_PLATFORM": "offscreen"})
            out["png"] = str(png)
        except Exception as exc:  # the figures stand without the picture
            out["png_error"] = str(exc)
    return out


def _stream(path: str, check: bool, limit: int | None = None) -> tuple[int, float, float]:
    """(frames, wall s, CPU s) of one pass over the file (its first ``limit``
    bytes) in CHUNK reads."""
    from firmware_bridge.codec import Decoder
    from firmware_bridge.messages import SampleBlock
    from monitor.pipeline import MonitorPipeline

    dec, pipe = Decoder(), MonitorPipeline()
    frames = 0
    t_first: float | None = None
    t_last = 0.0
    with open(path, "rb") as fh, Stopwatch() as sw:
        while (limit is None or fh.tell() < limit) and (chunk := fh.read(CHUNK)):
            res = dec.feed(chunk, 0.0 if t_first is None else t_last - t_first)
            for item in res.ordered():
                if isinstance(item, SampleBlock):
                    frames += item.n
                    if t_first is None:
                        t_first = float(item.t[0])
                    t_last = float(item.t[-1])
                    if check:
                        pipe.on_block(item)
                elif check:
                    pipe.on_message(item)
        if check:
            pipe.flush()
    return frames, sw.wall, sw.cpu


def _child(path: str, cups: int, rate: int, duration: float) -> dict:
    from firmware_bridge.codec import Decoder  # noqa: F401 - imports before the baseline RSS
    from monitor.pipeline import MonitorPipeline  # noqa: F401

    rss0 = rss_mb()
    _stream(path, check=True, limit=1 << 16)  # warm-up: first calls load lazy code paths
    frames, wall, cpu = _stream(path, check=True)
    peak = peak_rss_mb()
    _, dwall, dcpu = _stream(path, check=False)
    return {
        "cups": cups, "rate_hz": rate, "data_s": duration, "frames": frames,
        "frames_per_s": frames / wall, "cup_samples_per_s": frames * cups / wall,
        "frames_per_cpu_s": frames / cpu,  # steadier than wall time on a shared machine
        "mb_per_s": Path(path).stat().st_size / wall / 1e6,
        "cost_cpu_per_s": cpu / duration, "decode_cost_cpu_per_s": dcpu / duration,
        "ns_per_cup_sample": 1e9 * cpu / (frames * cups),
        "decode_frames_per_s": frames / dwall,
        "peak_rss_mb": peak, "rss_after_imports_mb": rss0, "working_mb": peak - rss0,
    }


def format_table(r: dict) -> str:
    lines = [f"Scaling: decode + check (Decoder + MonitorPipeline), {r['chunk_bytes']} B reads; "
             f"cost = CPU s per s of data",
             f"{'cups':>5}{'rate Hz':>8}{'frames/s':>11}{'per CPU s':>11}{'Mcup-smp/s':>11}"
             f"{'cost':>8}{'decode':>8}{'ns/cup-smp':>11}{'peak RSS':>9}{'working':>8}"]
    for p in r["points"]:
        lines.append(f"{p['cups']:>5}{p['rate_hz']:>8}{p['frames_per_s']:>11,.0f}"
                     f"{p['frames_per_cpu_s']:>11,.0f}{p['cup_samples_per_s'] / 1e6:>11.2f}"
                     f"{p['cost_cpu_per_s']:>8.3f}{p['decode_cost_cpu_per_s']:>8.3f}{p['ns_per_cup_sample']:>11.0f}"
                     f"{p['peak_rss_mb']:>8.0f}M{p['working_mb']:>7.1f}M")
    fc, fr = r["fit_cups"], r["fit_rate"]
    lines.append(f"linear fits of cost: against cups (1 kHz) {fc['intercept']:.4f} + "
                 f"{fc['slope']:.4f}/cup, R^2 {fc['r2']:.3f}; against rate (8 cups) "
                 f"{fr['intercept']:.4f} + {fr['slope'] * 1000:.4f}/kHz, R^2 {fr['r2']:.3f}")
    lines.append(f"{r['cost_per_mcs']:.2f} CPU s per s per million cup-samples/s at 8 cups; "
                 f"plot: {r.get('png', r.get('png_error', 'none'))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(_child(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--png", type=Path, default=DEFAULT_PNG, help="where to draw the plot")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cupmon-bench-") as tmp:
        r = run(SIZES[args.size], Path(tmp), args.png)
    print(json.dumps(r) if args.json else format_table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
