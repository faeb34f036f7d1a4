"""Memory and storage: a long 16-cup x 1 kHz session replayed as fast as
possible with recording on.

The parent writes the capture (``normal`` with the cups held for the whole
session, so every cup is regulated and checked throughout; the dwell alarms
at 10 and 15 min are raised and recorded as they would be). A child process
(so its peak RSS holds nothing but the replay) runs
:class:`~monitor.replay.CaptureReplaySource` (4 KiB reads through the real
Decoder) -> :class:`~monitor.pipeline.MonitorPipeline` + :class:`~monitor.recorder.Recorder`
into a fresh database, the way ``cupmon --replay FILE`` with recording does,
and samples its RSS every 0.1 s against the device time the pipeline has
checked. Reported: peak RSS (VmHWM), RSS at each quarter of the session (flat
means memory does not grow with session length), database size per hour,
replay speed as a multiple of real time (and the CPU time it took), the
recorder's losses (a recorder that cannot keep up drops blocks and counts
them), and the most each listener had queued at once (the replay waits when
a listener's backpressure bound is reached).

Run alone: ``python -m benchmarks.replay_memory [--size quick]``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import (
    SIZES,
    Size,
    make_capture,
    peak_rss_mb,
    rss_mb,
    run_child,
    section_main,
)

CUPS = 16
RATE_HZ = 1000
SAMPLE_EVERY_S = 0.1   # RSS reading interval, wall s (reading /proc costs ~20 µs)


def run(size: Size, workdir: Path) -> dict:
    """Write the capture here, replay it in a child, return its figures."""
    capture = workdir / "replay16.bin"
    gen = make_capture(capture, "normal", CUPS, RATE_HZ, size.replay_s, "binary",
                       hold_s=size.replay_s + 60.0)
    db = workdir / "replay.db"
    r = run_child("benchmarks.replay_memory",
                  ["--child", str(capture), str(db), str(size.replay_s)],
                  timeout=max(300.0, size.replay_s))
    r["capture_bytes"] = gen["bytes"]
    r["capture_frames"] = gen["frames"]
    return r


def _child(capture: str, db: str, duration_s: float) -> dict:
    from monitor.pipeline import MonitorPipeline
    from monitor.recorder import Recorder
    from monitor.replay import CaptureReplaySource

    rss_start = rss_mb()
    src = CaptureReplaySource(capture, speed=None, chunk_size=4096)
    pipe = MonitorPipeline()
    # A replay can wait for the writer (cupmon records live sources only, where
    # a full queue drops and counts): the whole hour is stored, none dropped.
    rec = Recorder(db, source=capture, backpressure=src.notifier.backpressure)
    rec.start_session()
    src.add_listener(pipe)
    src.add_listener(rec)
    pipe.add_event_sink(rec.record_event)

    samples: list[tuple[float, float, float]] = []  # (wall s, device s checked, RSS MB)
    done = threading.Event()
    t0 = time.perf_counter()
    t_dev0: list[float] = []

    def sampler() -> None:
        while not done.wait(SAMPLE_EVERY_S):
            t = pipe.snapshot().t
            if t is None:
                continue
            if not t_dev0:
                t_dev0.append(t)
            samples.append((time.perf_counter() - t0, t - t_dev0[0], rss_mb()))

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    cpu0 = time.process_time()
    src.start()
    src.wait_done()
    t_checked = time.perf_counter() - t0
    # Most samples x cups each listener had waiting at once (read before
    # stop: the notifier lets its listeners go then).
    qs = getattr(src.notifier, "queue_stats", dict)()
    peaks = {name: q["peak_values"] for name, q in qs.items()}
    rec.set_summary(pipe.stats_summary())
    src.stop(timeout=120.0)  # -> the recorder stores what is queued and completes the session
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    done.set()
    th.join()

    db_bytes = sum(p.stat().st_size for p in Path(db).parent.glob(Path(db).name + "*"))
    quarters = []
    for q in (0.25, 0.5, 0.75, 1.0):
        # The RSS over the quarter of the session that ends here (its largest
        # reading), or the reading nearest its end when the replay was too fast
        # for one to fall inside.
        inq = [m for _, d, m in samples if (q - 0.25) * duration_s < d <= q * duration_s]
        if not inq and samples:
            inq = [min(samples, key=lambda s: abs(s[1] - q * duration_s))[2]]
        quarters.append(max(inq) if inq else float("nan"))
    st = rec.stats()
    stats = src.stats()
    return {
        "cups": CUPS, "rate_hz": RATE_HZ, "session_s": duration_s,
        "replay_wall_s": wall, "replay_check_wall_s": t_checked,
        "replay_realtime_factor": duration_s / wall, "replay_cpu_s": cpu,
        "replay_peak_rss_mb": peak_rss_mb(), "replay_rss_start_mb": rss_start,
        "replay_rss_quarters_mb": quarters,
        "replay_rss_growth_mb": quarters[-1] - quarters[0],
        "db_bytes": db_bytes, "db_mb_per_hour": db_bytes / 1e6 * 3600.0 / duration_s,
        "recorder_samples_written": st["samples_written"],
        "recorder_dropped_samples": st["dropped_samples"],
        "frames_decoded": stats.frames_ok, "events": pipe.event_count,
        "queue_peak_values": peaks,
        "rss_trace": [(round(w, 2), round(d, 1), round(m, 1)) for w, d, m in samples[::8]],
    }


def format_table(r: dict) -> str:
    q = r["replay_rss_quarters_mb"]
    minutes = r["session_s"] / 60.0
    marks = " / ".join(f"{minutes * f:.3g} min {v:.0f}" for f, v in zip((0.25, 0.5, 0.75, 1.0), q,
                                                                      strict=True))
    return "\n".join([
        f"Replay with recording: {r['cups']} cups x {r['rate_hz']} Hz, {minutes:.3g} min session "
        f"({r['capture_bytes'] / 1e6:.0f} MB capture), as fast as possible",
        f"peak RSS {r['replay_peak_rss_mb']:.0f} MB (at start {r['replay_rss_start_mb']:.0f} MB); "
        f"RSS by quarter (MB): {marks}",
        f"replay {r['replay_realtime_factor']:.1f}x real time ({r['replay_wall_s']:.1f} s, "
        f"{r.get('replay_cpu_s', float('nan')):.1f} s CPU); "
        f"database {r['db_bytes'] / 1e6:.1f} MB = {r['db_mb_per_hour']:.1f} MB/h; "
        f"recorder wrote {r['recorder_samples_written']:,} samples, dropped "
        f"{r['recorder_dropped_samples']:,}; {r['events']} alarm events",
        "most queued at once (samples x cups): " + (", ".join(
            f"{k} {v:,}" for k, v in r.get("queue_peak_values", {}).items()) or "not reported"),
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(_child(argv[1], argv[2], float(argv[3]))))
        return 0
    return section_main(__doc__, run, format_table, SIZES, argv)


if __name__ == "__main__":
    sys.exit(main())
