"""Alarm latency: host-clock time from a frame's bytes being written to a
pseudo-terminal to the alarm event being emitted by the monitor.

A small device process (the ``--device`` mode of this module: a real board is
independent hardware, so the writer must not share the monitor's GIL) writes
pre-encoded 16-cup SAMPLE frames to the pty master at a 1 kHz pace: every
millisecond whatever frames are due, in one ``os.write``, stamping
``time.monotonic()`` just before the write (CLOCK_MONOTONIC is system-wide, so
both processes read the same clock). Every 100-150 ms (seeded jitter, so the
excursions fall at every phase of the reader's reads and of the pipeline's
20 ms batching) one cup's suction jumps to 27.5 kPa (over_suction raises
above 26 kPa) for 30 ms with its pump on, then back to 22.5 kPa.

The monitor is what cupmon runs: :class:`~firmware_bridge.link.SerialLink`
on the pty slave -> Notifier -> :class:`~monitor.pipeline.MonitorPipeline`
with an event sink that stamps ``time.monotonic()`` on arrival. The
over_suction condition delay (1 s, docs/alarms.md) is configured to 0, so the
event is completed by the first over-threshold frame; each event is matched to
the frame that completed it through its device time (``AlarmEvent.t``), which
would also account for a non-zero delay. Latency = sink time - write time of
that frame: the host-side processing latency (link read, decode, notifier,
batching, check, alarm, sink), with no condition delay in it.

Run alone: ``python -m benchmarks.latency [--size quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time
import tty
from bisect import bisect_right
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, SIZES, Size, percentile, section_main
from firmware_bridge.listener import Listener

CUPS = 16
RATE_HZ = 1000
WARMUP_S = 1.5        # normal frames before the first excursion (link connects, INFO)
EXCURSION_N = 30      # frames per excursion (30 ms at 1 kHz)
SPACING_S = (0.10, 0.15)
BASE_KPA, HIGH_KPA = 22.5, 27.5
T0_US = 1_000_000     # device clock of frame 0


def plan(excursions: int, seed: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(start frame of each excursion, its cup 0-based) and implicitly the
    frame count: the last excursion ends 0.3 s before the stream does."""
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(*SPACING_S, excursions) * RATE_HZ
    starts = (WARMUP_S * RATE_HZ + np.concatenate(([0.0], np.cumsum(gaps[:-1])))).astype(np.int64)
    return starts, np.arange(excursions) % CUPS


def build_stream(excursions: int, seed: int = 8) -> tuple[bytes, int, bytes]:
    """(INFO frame, frame count, the SAMPLE frames back to back)."""
    from firmware_bridge.codec import encode_info, encode_samples
    from firmware_bridge.messages import DeviceInfo
    from firmware_bridge.protocol import Status

    starts, cups = plan(excursions, seed)
    n = int(starts[-1] + EXCURSION_N + 0.3 * RATE_HZ)
    rng = np.random.default_rng(seed + 1)
    # Sensor noise keeps the stuck-sensor check quiet, as on a real board.
    suction = (BASE_KPA + rng.normal(0.0, 0.05, (n, CUPS))).astype(np.float32)
    status = np.full((n, CUPS), int(Status.REGULATING), np.uint8)
    for s, c in zip(starts.tolist(), cups.tolist(), strict=True):
        suction[s:s + EXCURSION_N, c] = HIGH_KPA + rng.normal(0.0, 0.05, EXCURSION_N)
        status[s:s + EXCURSION_N, c] |= int(Status.PUMP_ON)
    t_us = T0_US + np.arange(n, dtype=np.int64) * (1_000_000 // RATE_HZ)
    frames, seq = encode_samples(t_us, suction, status, 1)
    info = encode_info(DeviceInfo("BENCH-LATENCY", (1, 0, 0), CUPS, RATE_HZ), 0, T0_US - 1000)
    return info, n, frames


# --- the device process ------------------------------------------------------

def device_main(fd: int, excursions: int, log_path: str) -> int:
    """Write the stream to pty master ``fd`` at 1 kHz; log (first frame index,
    monotonic time) of every write to ``log_path``; then wait for stdin to close."""
    info, n, frames = build_stream(excursions)
    size = len(frames) // n
    view = memoryview(frames)

    def write_all(data: memoryview | bytes) -> None:
        while data:
            k = os.write(fd, data)
            data = data[k:]

    def drain() -> None:  # host commands (GET_INFO, PING): read and ignore
        while select.select([fd], [], [], 0)[0]:
            try:
                if not os.read(fd, 4096):
                    return
            except OSError:
                return

    write_all(info)
    log: list[tuple[int, float]] = []
    t0 = time.monotonic()
    i = 0
    while i < n:
        due = min(n, int((time.monotonic() - t0) * RATE_HZ) + 1)
        if due > i:
            log.append((i, time.monotonic()))
            write_all(view[i * size:due * size])
            i = due
        drain()
        wait = t0 + i / RATE_HZ - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    Path(log_path).write_text(json.dumps(log))
    print("done", flush=True)
    sys.stdin.read()  # keep the master open until the monitor has stopped
    return 0


# --- the monitor side ----------------------------------------------------------

class _BlockStamp(Listener):
    """A listener beside the pipeline: host time each excursion's first frame
    reached a listener (link + notifier only), to split the latency."""

    idle_interval = None

    def __init__(self, onset_us: np.ndarray) -> None:
        self.onset_us = onset_us
        self.seen: dict[int, float] = {}

    def on_block(self, block) -> None:
        now = time.monotonic()
        a, b = round(block.t[0] * 1e6), round(block.t[-1] * 1e6)
        lo, hi = np.searchsorted(self.onset_us, [a, b + 1])
        for k in range(int(lo), int(hi)):
            self.seen[k] = now


def run(size: Size, workdir: Path) -> dict:
    """Measure (see module doc)."""
    from firmware_bridge import conditions as C
    from firmware_bridge.link import SerialLink
    from monitor.config import CupConfig, MonitorConfig
    from monitor.pipeline import MonitorPipeline

    excursions = size.latency_excursions
    starts, cups = plan(excursions)
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    log_path = workdir / "latency_writes.json"

    arrivals: list[tuple[float, object]] = []
    lock = threading.Lock()

    def sink(ev) -> None:
        now = time.monotonic()
        if ev.event == "raised" and ev.condition == C.OVER_SUCTION:
            with lock:
                arrivals.append((now, ev))

    config = MonitorConfig(defaults=CupConfig(over_delay_s=0.0))
    pipe = MonitorPipeline(config)
    pipe.add_event_sink(sink)
    stamp = _BlockStamp(T0_US + starts * (1_000_000 // RATE_HZ))
    link = SerialLink(path)
    link.add_listener(pipe)
    link.add_listener(stamp)
    proc = None
    try:
        link.start()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.latency", "--device", str(master),
             "--excursions", str(excursions), "--log", str(log_path)],
            pass_fds=(master,), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=REPO, env=env)
        os.close(master)  # the device owns it now
        master = -1
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "done":
            raise RuntimeError(f"latency device process failed (exit {proc.wait(5)})")
        time.sleep(0.3)  # the last events on their way
        stats = link.stats()
    finally:
        link.stop()
        if proc is not None:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(10)
        if master >= 0:
            os.close(master)
        os.close(slave)

    writes = json.loads(log_path.read_text())
    first_idx = [w[0] for w in writes]
    # Frame index -> write time of the os.write that carried it.
    def written_at(i: int) -> float:
        return writes[bisect_right(first_idx, i) - 1][1]

    lat_ms: list[float] = []
    matched: set[int] = set()
    delay_frames: list[int] = []
    for now, ev in arrivals:
        idx = round((ev.t * 1e6 - T0_US) / (1e6 / RATE_HZ))  # frame that completed it
        # The excursion it belongs to: the latest start at or before idx.
        k = int(np.searchsorted(starts, idx, side="right")) - 1
        if k < 0 or idx - starts[k] >= EXCURSION_N or ev.cup != int(cups[k]) + 1:
            continue  # not one of ours (never expected)
        matched.add(k)
        delay_frames.append(idx - int(starts[k]))
        lat_ms.append(1e3 * (now - written_at(idx)))
    block_ms = [1e3 * (t - written_at(int(starts[k]))) for k, t in stamp.seen.items()]
    return {
        "cups": CUPS, "rate_hz": RATE_HZ, "excursions": excursions,
        "detected": len(matched), "missed": excursions - len(matched),
        "latency_p50_ms": percentile(lat_ms, 50), "latency_p90_ms": percentile(lat_ms, 90),
        "latency_p99_ms": percentile(lat_ms, 99),
        "latency_max_ms": max(lat_ms) if lat_ms else float("nan"),
        "latency_min_ms": min(lat_ms) if lat_ms else float("nan"),
        "block_p50_ms": percentile(block_ms, 50), "block_p99_ms": percentile(block_ms, 99),
        "block_max_ms": max(block_ms) if block_ms else float("nan"),
        "frames_after_onset_max": max(delay_frames) if delay_frames else -1,
        "writes": len(writes), "link_frames_ok": stats.frames_ok,
        "link_frames_lost": stats.frames_lost, "link_crc_errors": stats.crc_errors,
        "listener_overruns": sum(stats.listener_overruns.values()),
    }


def format_table(r: dict) -> str:
    return "\n".join([
        f"Alarm latency: {r['cups']} cups x {r['rate_hz']} Hz on a pty, frame written -> "
        f"over_suction event emitted (condition delay 0)",
        f"excursions {r['excursions']}, detected {r['detected']}, missed {r['missed']}; "
        f"p50 {r['latency_p50_ms']:.1f} ms, p90 {r['latency_p90_ms']:.1f} ms, "
        f"p99 {r['latency_p99_ms']:.1f} ms, max {r['latency_max_ms']:.1f} ms "
        f"(min {r['latency_min_ms']:.1f} ms)",
        f"of which link + notifier (frame written -> block in a listener): "
        f"p50 {r['block_p50_ms']:.1f} ms, p99 {r['block_p99_ms']:.1f} ms, "
        f"max {r['block_max_ms']:.1f} ms",
        f"link: {r['link_frames_ok']:,} frames, {r['link_frames_lost']} lost, "
        f"{r['link_crc_errors']} CRC errors, {r['listener_overruns']} listener overruns",
    ])


def main(argv: list[str] | None = None) -> int:
    def writer_flags(ap: argparse.ArgumentParser):
        ap.add_argument("--device", type=int, help=argparse.SUPPRESS)  # internal: the writer
        ap.add_argument("--excursions", type=int, default=100, help=argparse.SUPPRESS)
        ap.add_argument("--log", help=argparse.SUPPRESS)
        return lambda args: (None if args.device is None
                             else device_main(args.device, args.excursions, args.log))

    return section_main(__doc__, run, format_table, SIZES, argv, extra=writer_flags)


if __name__ == "__main__":
    sys.exit(main())
