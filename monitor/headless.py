"""``cupmon --headless``: the whole monitor in a terminal.

The same pipeline as the GUI (source -> Notifier -> MonitorPipeline, Recorder),
with a live table on a terminal, alarm events as JSON lines (``--events``) and
a JSON summary at the end (``--summary``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from firmware_bridge.listener import Listener
from firmware_bridge.messages import LinkState, SampleBlock
from firmware_bridge.source import Source

from .alarms import AlarmEvent
from .config import MonitorConfig, load_config
from .pipeline import MonitorPipeline
from .sources import SourceSpec, open_source
from .terminal import render_table

#: Refresh period of the live table (s): a few times a second is readable.
REFRESH_S = 0.25
#: How long a live source may take to connect before we say so (s).
CONNECT_TIMEOUT_S = 10.0


def config_from_args(args: argparse.Namespace) -> MonitorConfig:
    """Configuration file, then ``--band``, ``--unit`` and ``--set`` overrides."""
    overrides: list[str] = []
    if args.band:
        low, sep, high = args.band.replace(" ", "").partition(",")
        if not sep:
            raise ValueError(f"--band takes LOW,HIGH in kPa (e.g. 20,25), not {args.band!r}")
        overrides += [f"band_low_kpa={low}", f"band_high_kpa={high}"]
    if args.unit:
        overrides.append(f"unit={args.unit}")
    overrides += list(args.set)
    return load_config(args.config, overrides)


def spec_from_args(args: argparse.Namespace) -> SourceSpec:
    params = []
    for item in args.sim_param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--sim-param takes KEY=VALUE, not {item!r}")
        params.append((key, value))
    kw: dict[str, Any] = dict(port=args.port, sim=args.sim, replay=args.replay, cups=args.cups,
                              rate_hz=args.rate, seed=args.seed, speed=args.speed, db=args.db,
                              sim_params=tuple(params))
    if args.baud is not None:
        kw["baud"] = args.baud
    return SourceSpec(**kw)


class EventWriter:
    """An event sink writing one JSON object per line (thread-safe, flushed)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, ev: AlarmEvent) -> None:
        line = json.dumps(ev.to_dict(), ensure_ascii=False)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class EventPrinter:
    """An event sink printing one readable line per event (for logs and pipes)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, ev: AlarmEvent) -> None:
        who = f"cup {ev.cup}" if ev.cup is not None else "device"
        line = (f"{ev.t:10.3f} s  {ev.priority.upper():6} {ev.event:12} {who:7} "
                f"{ev.condition}: {ev.message}")
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def _open_events(target: str | None) -> tuple[IO[str] | None, bool]:
    if target is None:
        return None, False
    if target == "-":
        return sys.stdout, False
    return open(target, "w", encoding="utf-8"), True


class DurationWatch(Listener):
    """Sets ``done`` once ``duration`` s of device time have passed since the
    first sample (exact, whatever the refresh rate or replay speed)."""

    idle_interval = None

    def __init__(self, duration: float | None) -> None:
        self.duration = duration
        self.first_t: float | None = None
        self.done = threading.Event()

    def on_block(self, block: SampleBlock) -> None:
        if self.first_t is None:
            self.first_t = float(block.t[0])
        if self.duration is not None and block.t[-1] - self.first_t >= self.duration:
            self.done.set()


class _Keys:
    """Single-key commands on a terminal (a: acknowledge, p: pause audio,
    q: quit) without Enter; restores the terminal on exit."""

    HELP = "keys: a acknowledge all · p pause audio 2 min · q quit"

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._saved: Any = None
        self.enabled = False

    def __enter__(self) -> _Keys:
        try:
            if self._stream.isatty():
                import termios
                import tty

                fd = self._stream.fileno()
                self._saved = termios.tcgetattr(fd)
                tty.setcbreak(fd)
                self.enabled = True
        except (OSError, ValueError, ImportError):
            self.enabled = False
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._stream.fileno(), termios.TCSADRAIN, self._saved)

    def wait(self, timeout: float) -> str:
        """The key pressed within ``timeout`` s ("" if none)."""
        if not self.enabled:
            time.sleep(timeout)
            return ""
        import select

        ready, _, _ = select.select([self._stream], [], [], timeout)
        return os.read(self._stream.fileno(), 1).decode(errors="ignore") if ready else ""


class _Stopper:
    """SIGINT/SIGTERM end the run cleanly (session completed, summary written)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stopper:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, lambda *_: self.event.set())
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def run_headless(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Run until ``--duration`` of device time, the end of a replay, or Ctrl-C."""
    out = out or sys.stdout
    config = config_from_args(args)
    spec = spec_from_args(args)
    events_stream, close_events = _open_events(args.events)
    tty = out.isatty() and events_stream is not sys.stdout
    source = open_source(spec)
    calibration = _apply_calibration(source, spec, args.db)
    pipeline = MonitorPipeline(config)
    recorder = None
    try:
        if events_stream is not None:
            pipeline.add_event_sink(EventWriter(events_stream))
        elif not tty:
            pipeline.add_event_sink(EventPrinter(out))
        if spec.is_live and not args.no_record:
            from .recorder import Recorder

            recorder = Recorder(args.db, source=spec.describe(), therapist=args.therapist,
                                patient=args.patient, notes=args.notes,
                                targets=[[c.band_low_kpa, c.band_high_kpa]
                                         for c in (config.cup(i) for i in range(1, 17))])
            pipeline.add_event_sink(recorder.record_event)
            source.add_listener(recorder)
        source.add_listener(pipeline)
        watch = DurationWatch(args.duration)
        source.add_listener(watch)
        source.start()  # a source that cannot open raises here: nothing recorded
        if recorder is not None:
            recorder.start_session()
        result = _watch(source, pipeline, watch, args, tty, out)
    finally:
        source.stop()
        if close_events and events_stream is not None:
            events_stream.close()
    if recorder is not None:
        summary = pipeline.stats_summary()
        recorder.set_summary(summary)
        recorder.stop()
    if args.summary:
        _write_summary(Path(args.summary), spec, source, pipeline, recorder, calibration)
    if tty:
        out.write(render_table(pipeline.snapshot(), source.stats(), None, config.unit) + "\n")
    stats = source.stats()
    if spec.replay is not None and stats.frames_ok == 0 and stats.text_lines == 0:
        print(f"cupmon: no valid data in {spec.replay} ({stats.bytes_discarded} bytes skipped, "
              f"{stats.crc_errors} CRC errors): not a cupmon capture?", file=sys.stderr)
        return 1
    return result


def _watch(source: Source, pipeline: MonitorPipeline, watch: DurationWatch,
           args: argparse.Namespace, tty: bool, out: IO[str]) -> int:
    """The foreground loop: table refresh, end conditions. Returns the exit code."""
    done: Callable[[float | None], bool] = getattr(source, "wait_done", None) or (lambda _t: False)
    live = args.replay is None
    connected_by = time.monotonic() + CONNECT_TIMEOUT_S
    said_waiting = False
    last_frames, last_clock = 0, time.monotonic()
    with _Stopper() as stopper, _Keys(sys.stdin if tty else _NoInput()) as keys:
        while not stopper.event.is_set():
            key = keys.wait(REFRESH_S).lower()
            if key == "q":
                break
            if key == "a":
                pipeline.acknowledge()
            elif key == "p":
                pipeline.pause_audio()
            snap = pipeline.snapshot()
            if watch.done.is_set():
                pipeline_idle(source, timeout=5.0)
                break
            if snap.t is None and live and not said_waiting and time.monotonic() > connected_by:
                print(f"cupmon: no data from {source_name(args)} yet; still trying "
                      "(Ctrl-C to give up)", file=sys.stderr)
                said_waiting = True
            if not live and done(0):
                pipeline_idle(source)
                break
            if snap.link is LinkState.ERROR and snap.t is None and not live:
                break
            if tty:
                stats = source.stats()
                now = time.monotonic()
                fps = (stats.frames_ok - last_frames) / max(now - last_clock, 1e-6)
                last_frames, last_clock = stats.frames_ok, now
                out.write("\x1b[H\x1b[J" + render_table(snap, stats, fps, pipeline.config.unit)
                          + (_Keys.HELP + "\n" if keys.enabled else ""))
                out.flush()
    return 0


class _NoInput:
    def isatty(self) -> bool:
        return False


def pipeline_idle(source: Source, timeout: float = 60.0) -> None:
    """Let every listener take what the replay queued before the source stops."""
    join = getattr(source.notifier, "join_idle", None)
    if join is not None:
        join(timeout)


def source_name(args: argparse.Namespace) -> str:
    return args.port or (f"simulator {args.sim}" if args.sim else f"replay {args.replay}")


def _apply_calibration(source: Source, spec: SourceSpec, db: Path | None) -> Any:
    """Put the calibration in force (host-corrected or written to the device)
    on every connect, and say on stderr which one is in force or what is
    missing/overdue. A stored session was recorded corrected already."""
    from .replay import SessionReplaySource

    if isinstance(source, SessionReplaySource):
        return None
    from .cal_apply import apply_calibration_on_connect

    def say(status: Any) -> None:
        for line in status.lines(brief=True):
            print(f"cupmon: {line}", file=sys.stderr)

    return apply_calibration_on_connect(source, db=db, on_status=say)


def _write_summary(path: Path, spec: SourceSpec, source: Source, pipeline: MonitorPipeline,
                   recorder: Any, calibration: Any = None) -> None:
    info = source.info
    raised: dict[str, int] = {}
    for ev in pipeline.events():
        if ev.event == "raised":
            raised[ev.condition] = raised.get(ev.condition, 0) + 1
    stats = source.stats()
    doc = {
        "source": spec.describe(),
        "session_id": recorder.session_id if recorder is not None else None,
        "device": None if info is None else {
            "serial": info.serial, "firmware": info.firmware_str, "cups": info.cups,
            "rate_hz": info.rate_hz},
        "therapy": pipeline.stats_summary(),
        "alarms_raised": raised,
        "events": [ev.to_dict() for ev in pipeline.events()],
        "calibration": (None if calibration is None or calibration.status is None
                        else calibration.status.to_dict()),
        "link": {"frames_ok": stats.frames_ok, "crc_errors": stats.crc_errors,
                 "frames_lost": stats.frames_lost, "bytes_discarded": stats.bytes_discarded,
                 "reconnects": stats.reconnects},
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
