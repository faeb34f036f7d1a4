"""Decode + check throughput: a ``cupsim normal --cups 8 --rate 1000`` capture
through the public :class:`~firmware_bridge.codec.Decoder` and a
:class:`~monitor.pipeline.MonitorPipeline` (checker, alarms, statistics), fed
in 4 KiB chunks as a serial port delivers them; against the per-frame Python
baseline of :mod:`benchmarks.naive` in the same run. The same for the text
(serial-plotter) format against a per-line baseline.

The capture is held in memory, so no path pays for file reads. Every path,
the baselines too, reports the best of ``repeats`` passes (like ``timeit``: the
least disturbed by other processes on a shared machine); the baselines run over
the first part of the capture (they are slow, and their cost per frame is
flat). Ratios are given by wall time (the target) and by CPU time.

Run alone: ``python -m benchmarks.decode_check [--quick]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import naive
from benchmarks.common import SIZES, Size, Stopwatch, make_capture, section_main

CUPS = 8
RATE_HZ = 1000
CHUNK = 4096       # bytes per read, a typical serial read at this data rate
BIG_CHUNK = 65536  # what a reader that fell behind gets in one read


def cupmon_pass(data: bytes, chunk: int, check: str = "pipeline") -> dict:
    """One pass of the data through the Decoder and ``check``: "pipeline"
    (MonitorPipeline: checker, alarms, statistics), "checker" (the Checker
    alone) or "none". Returns counts and times."""
    from firmware_bridge.codec import Decoder
    from firmware_bridge.messages import SampleBlock
    from monitor.checker import Checker
    from monitor.config import MonitorConfig
    from monitor.pipeline import MonitorPipeline

    dec = Decoder()
    pipe = MonitorPipeline()
    events: list = []
    pipe.add_event_sink(events.append)
    checker = Checker(MonitorConfig(), CUPS)  # "checker": blocks go to it directly
    frames = blocks = 0
    t_first: float | None = None
    t_last = 0.0
    with Stopwatch() as sw:
        for i in range(0, len(data), chunk):
            # A capture has no arrival times: a host clock that follows the
            # device time is what a live reader would have seen.
            host = 0.0 if t_first is None else t_last - t_first
            res = dec.feed(data[i:i + chunk], host)
            for item in res.ordered():
                if isinstance(item, SampleBlock):
                    frames += item.n
                    blocks += 1
                    if t_first is None:
                        t_first = float(item.t[0])
                    t_last = float(item.t[-1])
                    if check == "pipeline":
                        pipe.on_block(item)
                    elif check == "checker":
                        events.extend(checker.process(item))
                elif check == "pipeline":
                    pipe.on_message(item)
                elif check == "checker":
                    events.extend(checker.on_message(item))
        if check == "pipeline":
            pipe.flush()
    return {"frames": frames, "blocks": blocks, "wall_s": sw.wall, "cpu_s": sw.cpu,
            "events": len(events), "crc_errors": dec.stats.crc_errors,
            "mode": dec.mode}


def best_of(repeats: int, fn, *args, **kw) -> dict:
    """The fastest of ``repeats`` runs of ``fn`` (its dict, by wall_s)."""
    runs = [fn(*args, **kw) for _ in range(max(1, repeats))]
    return min(runs, key=lambda r: r["wall_s"])


def naive_pass(data: bytes, chunk: int) -> dict:
    """One pass of the per-frame baseline (benchmarks.naive) over ``data``."""
    with Stopwatch() as sw:
        n_frames, chk = naive.decode_check_binary(naive.chunked(data, chunk))
    return {"frames": n_frames, "blocks": 1, "wall_s": sw.wall, "cpu_s": sw.cpu, "checker": chk}


def naive_text_pass(text: bytes, chunk: int) -> dict:
    """One pass of the per-line text baseline over ``text``."""
    with Stopwatch() as sw:
        n_lines, _ = naive.decode_check_text(naive.chunked(text, chunk))
    return {"frames": n_lines, "blocks": 1, "wall_s": sw.wall, "cpu_s": sw.cpu}


def rates(r: dict, nbytes: int, cups: int) -> dict:
    """frames/s, cup-samples/s and MB/s (1e6 bytes) of a timed pass."""
    w = r["wall_s"]
    return {"frames_per_s": r["frames"] / w, "cup_samples_per_s": r["frames"] * cups / w,
            # Per CPU second: steadier than wall time when other processes load the machine.
            "frames_per_cpu_s": r["frames"] / max(r["cpu_s"], 1e-9),
            "mb_per_s": nbytes / w / 1e6, "us_per_block": 1e6 * w / max(1, r["blocks"])}


def run(size: Size, workdir: Path) -> dict:
    """Measure (see module doc). Returns flat figures for the summary table."""
    out: dict = {"cups": CUPS, "rate_hz": RATE_HZ, "chunk_bytes": CHUNK,
                 "capture_s": size.decode_s}
    bin_path, txt_path = workdir / "decode8.bin", workdir / "decode8.txt"
    make_capture(bin_path, "normal", CUPS, RATE_HZ, size.decode_s, "binary")
    make_capture(txt_path, "normal", CUPS, RATE_HZ, size.decode_s, "text")
    data, text = bin_path.read_bytes(), txt_path.read_bytes()
    out["capture_bytes"] = len(data)
    out["text_capture_bytes"] = len(text)

    # --- binary: cupmon ----------------------------------------------------------
    # --- binary: cupmon, and the naive baseline over the first naive_s seconds ---
    # One pass of each path per round, so that every path meets the same spells
    # of load from other processes; each keeps its best round.
    part = data[:int(len(data) * min(1.0, size.naive_s / size.decode_s))]
    paths = {"dec_only": (cupmon_pass, data, CHUNK, "none"),
             "chk": (cupmon_pass, data, CHUNK, "checker"),
             "full": (cupmon_pass, data, CHUNK, "pipeline"),
             "big": (cupmon_pass, data, BIG_CHUNK, "pipeline"),
             "base": (naive_pass, part, CHUNK, None)}
    rounds: dict[str, list[dict]] = {k: [] for k in paths}
    for _ in range(max(1, size.repeats)):
        for key, (fn, buf, chunk, check) in paths.items():
            rounds[key].append(fn(buf, chunk) if check is None else fn(buf, chunk, check))
    dec_only, chk, full, big, base = (min(rounds[k], key=lambda r: r["wall_s"]) for k in paths)
    nchk = base.pop("checker")
    # The same with a CRC computed byte by byte in Python (no C helper): context only,
    # the ratio against the target uses the faster baseline above.
    with Stopwatch() as sw:
        n_py, _ = naive.decode_check_binary(naive.chunked(part, CHUNK), pure_python_crc=True)
    base_py = {"frames": n_py, "blocks": 1, "wall_s": sw.wall, "cpu_s": sw.cpu}

    for key, r, nbytes in (("decode_only", dec_only, len(data)), ("decode_checker", chk, len(data)),
                           ("decode_check", full, len(data)),
                           ("decode_check_64k", big, len(data)), ("naive", base, len(part)),
                           ("naive_pycrc", base_py, len(part))):
        for k, v in rates(r, nbytes, CUPS).items():
            out[f"{key}_{k}"] = v
        out[f"{key}_frames"] = r["frames"]
    out["decode_check_events"] = full["events"]
    out["naive_detections"] = len(nchk.detections)
    out["decode_check_vs_naive"] = out["decode_check_frames_per_s"] / out["naive_frames_per_s"]
    out["decode_check_64k_vs_naive"] = (out["decode_check_64k_frames_per_s"]
                                        / out["naive_frames_per_s"])
    # The same ratio in CPU time: steadier when other processes load the machine.
    out["decode_check_vs_naive_cpu"] = (out["decode_check_frames_per_cpu_s"]
                                        / out["naive_frames_per_cpu_s"])
    # Where the time goes, per 8-cup frame in CPU µs: decoding, and checking (the
    # pipeline: checker, statistics, alarms) = the full pass less the Decoder's.
    frames = max(1, full["frames"])
    out["samples_per_block"] = full["frames"] / max(1, full["blocks"])
    out["decode_us_per_frame"] = 1e6 * dec_only["cpu_s"] / frames
    out["check_us_per_frame"] = 1e6 * max(0.0, full["cpu_s"] - dec_only["cpu_s"]) / frames
    out["check_us_per_block"] = out["check_us_per_frame"] * out["samples_per_block"]
    out["naive_us_per_frame"] = 1e6 * base["cpu_s"] / max(1, base["frames"])
    # What the pipeline's check alone could sustain (frames/s), decoding aside.
    cpf = out["check_us_per_frame"]
    out["check_ceiling_frames_per_s"] = 1e6 / cpf if cpf > 0 else float("nan")

    # --- text: cupmon and the per-line baseline -------------------------------------
    tfull = best_of(size.repeats, cupmon_pass, text, CHUNK)
    tdec = best_of(size.repeats, cupmon_pass, text, CHUNK, check="none")
    tpart = text[:int(len(text) * min(1.0, size.naive_s / size.decode_s))]
    tbase = best_of(size.repeats, naive_text_pass, tpart, CHUNK)
    trate, tb = rates(tfull, len(text), CUPS), rates(tbase, len(tpart), CUPS)
    out.update(text_lines_per_s=trate["frames_per_s"], text_mb_per_s=trate["mb_per_s"],
               text_cup_samples_per_s=trate["cup_samples_per_s"], text_lines=tfull["frames"],
               text_mode=tfull["mode"], text_naive_lines_per_s=tb["frames_per_s"],
               text_decode_only_lines_per_s=tdec["frames"] / tdec["wall_s"],
               text_naive_mb_per_s=tb["mb_per_s"],
               text_vs_naive=trate["frames_per_s"] / tb["frames_per_s"])
    return out


def format_table(r: dict) -> str:
    rows = [
        ("cupmon Decoder only, 4 KiB chunks", "decode_only"),
        ("cupmon Decoder + Checker alone, 4 KiB", "decode_checker"),
        ("cupmon Decoder + MonitorPipeline, 4 KiB", "decode_check"),
        ("cupmon Decoder + MonitorPipeline, 64 KiB", "decode_check_64k"),
        ("naive per-frame (struct, C CRC, compare)", "naive"),
        ("naive per-frame, CRC loop in Python", "naive_pycrc"),
    ]
    lines = [f"Decode + check: {r['cups']} cups x {r['rate_hz']} Hz, {r['capture_s']:.0f} s "
             f"capture ({r['capture_bytes'] / 1e6:.1f} MB)",
             f"{'path':<44}{'frames/s':>12}{'cup-samples/s':>15}{'MB/s':>8}"]
    for label, k in rows:
        lines.append(f"{label:<44}{r[k + '_frames_per_s']:>12,.0f}"
                     f"{r[k + '_cup_samples_per_s']:>15,.0f}{r[k + '_mb_per_s']:>8.1f}")
    lines.append(f"decode+check / naive: {r['decode_check_vs_naive']:.2f}x (4 KiB), "
                 f"{r['decode_check_64k_vs_naive']:.2f}x (64 KiB)")
    lines.append(f"CPU per frame: decode {r['decode_us_per_frame']:.2f} us + check "
                 f"{r['check_us_per_frame']:.2f} us (naive {r['naive_us_per_frame']:.2f} us); "
                 f"by CPU time {r['decode_check_vs_naive_cpu']:.2f}x naive")
    lines.append(f"text: cupmon {r['text_lines_per_s']:,.0f} lines/s ({r['text_mb_per_s']:.1f} MB/s; "
                 f"Decoder alone {r['text_decode_only_lines_per_s']:,.0f}), naive per-line "
                 f"{r['text_naive_lines_per_s']:,.0f} lines/s: {r['text_vs_naive']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return section_main(__doc__, run, format_table, SIZES, argv)


if __name__ == "__main__":
    sys.exit(main())
